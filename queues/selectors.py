"""Reads: queue stats, job lists and details, throughput, worker heartbeats."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from queues import records
from queues.bootsteps import PAUSED_KEY, workers_key
from queues.definitions import QUEUES, QueueSpec
from saas.redaction import redact_data, redact_text
from saas.redis import queue_redis

#: kombu's Redis transport keeps priority level n of queue q in "q\x06\x16n".
PRIORITY_SEP = "\x06\x16"
BACKLOG_THRESHOLD = 1000
SEARCH_SCAN_LIMIT = 50_000
SEARCH_CHUNK = 1000


def broker_lists(queue: str) -> list[str]:
    """The broker's lists holding a queue's waiting messages, level 0 first."""
    return [queue] + [f"{queue}{PRIORITY_SEP}{level}" for level in range(1, 10)]


def _stats_commands(pipe, queue: str) -> None:
    for key in broker_lists(queue):
        pipe.llen(key)
    for state in (records.DELAYED, records.ACTIVE, records.COMPLETED, records.FAILED):
        pipe.zcard(records.state_key(queue, state))
    pipe.sismember(PAUSED_KEY, queue)


def _stats_from(queue: str, replies: list) -> dict[str, Any]:
    delayed, active, completed, failed, paused = replies[10:15]
    return {
        "queue": queue,
        "waiting": sum(replies[:10]),
        "active": active,
        "delayed": delayed,
        "completed": completed,
        "failed": failed,
        "paused": bool(paused),
    }


STATS_REPLIES = 15


def queue_stats(spec: QueueSpec) -> dict[str, Any]:
    """The seed's getQueueStats: one pipelined round trip, O(1) per count."""
    pipe = queue_redis().pipeline(transaction=False)
    _stats_commands(pipe, spec.name)
    return _stats_from(spec.name, pipe.execute())


def queues_stats() -> list[dict[str, Any]]:
    pipe = queue_redis().pipeline(transaction=False)
    for spec in QUEUES:
        _stats_commands(pipe, spec.name)
    replies = pipe.execute()
    return [
        _stats_from(spec.name, replies[i * STATS_REPLIES : (i + 1) * STATS_REPLIES])
        for i, spec in enumerate(QUEUES)
    ]


def queue_paused_names() -> set[str]:
    return set(queue_redis().smembers(PAUSED_KEY))


def workers_alive(queue: str, *, stale_after: float | None = None) -> list[str]:
    from django.conf import settings

    stale_after = stale_after or settings.QUEUE_HEARTBEAT_STALE_SECONDS
    return sorted(
        queue_redis().zrangebyscore(
            workers_key(queue), time.time() - stale_after, "+inf"
        )
    )


def queue_throughput(queue: str, *, minutes: int = 60) -> list[dict[str, Any]]:
    """Completed and failed jobs per minute, oldest first, ending this minute."""
    now_minute = int(time.time() // 60)
    span = range(now_minute - minutes + 1, now_minute + 1)
    keys = [records.minute_key(queue, records.COMPLETED, m) for m in span] + [
        records.minute_key(queue, records.FAILED, m) for m in span
    ]
    values = [int(v or 0) for v in queue_redis().mget(keys)]
    completed, failed = values[:minutes], values[minutes:]
    return [
        {"minute": m * 60, "completed": c, "failed": f}
        for m, c, f in zip(span, completed, failed, strict=True)
    ]


def queue_failure_rate(queue: str) -> tuple[float, int]:
    """(failed / finished, finished) over the last hour."""
    series = queue_throughput(queue)
    failed = sum(point["failed"] for point in series)
    finished = failed + sum(point["completed"] for point in series)
    return (failed / finished if finished else 0.0), finished


def backlog_key(queue: str) -> str:
    return f"queues:backlog:{queue}"


def queue_backlog_sample(queue: str, waiting: int | None = None) -> float | None:
    """Note since when a queue holds more than BACKLOG_THRESHOLD waiting jobs.

    Workers sample their queues every few seconds and so do health checks; the
    alert fires when the backlog has lasted over five minutes.
    """
    client = queue_redis()
    if waiting is None:
        pipe = client.pipeline(transaction=False)
        for key in broker_lists(queue):
            pipe.llen(key)
        waiting = sum(pipe.execute())
    if waiting > BACKLOG_THRESHOLD:
        client.set(backlog_key(queue), repr(time.time()), nx=True)
        since = client.get(backlog_key(queue))
        return float(since) if since else None
    client.delete(backlog_key(queue))
    return None


# --- jobs -------------------------------------------------------------------
LIST_FIELDS = ("id", "task", "priority", "salon", "state", "attempts", "worker")
LIST_FIELDS += ("enqueued_at", "started_at", "finished_at", "error", "queue")


@dataclass
class JobPage:
    jobs: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    per_page: int

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def has_previous(self) -> bool:
        return self.page > 1


def _rows(client, ids: list[str], fields=LIST_FIELDS) -> list[dict[str, Any]]:
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(records.job_key(job_id), fields)
    rows = []
    for job_id, values in zip(ids, pipe.execute(), strict=True):
        row = dict(zip(fields, values, strict=True))
        row["id"] = job_id
        rows.append(row)
    return rows


def _matches(row: dict[str, Any], term: str) -> bool:
    lowered = term.lower()
    return (
        row["id"] == term
        or lowered in (row.get("task") or "").lower()
        or term == (row.get("salon") or "")
        or lowered in (row.get("args") or "").lower()
        or lowered in (row.get("kwargs") or "").lower()
    )


def queue_jobs(
    spec: QueueSpec, state: str, *, page: int = 1, per_page: int = 25, search: str = ""
) -> JobPage:
    """A page of a queue's jobs in one state, newest first, optionally searched
    by job id, task name, salon id or text in the data."""
    client = queue_redis()
    key = records.state_key(spec.name, state)
    page = max(page, 1)
    search = search.strip()
    if not search:
        total = client.zcard(key)
        start = (page - 1) * per_page
        ids = client.zrevrange(key, start, start + per_page - 1)
        jobs = _rows(client, ids)
    else:
        matched: list[dict[str, Any]] = []
        fields = (*LIST_FIELDS, "args", "kwargs")
        for offset in range(0, SEARCH_SCAN_LIMIT, SEARCH_CHUNK):
            ids = client.zrevrange(key, offset, offset + SEARCH_CHUNK - 1)
            matched.extend(r for r in _rows(client, ids, fields) if _matches(r, search))
            if len(ids) < SEARCH_CHUNK:
                break
        total = len(matched)
        jobs = matched[(page - 1) * per_page : page * per_page]
    for job in jobs:
        job["state"] = job.get("state") or state
    pages = max(math.ceil(total / per_page), 1)
    return JobPage(jobs=jobs, total=total, page=page, pages=pages, per_page=per_page)


def job_detail(job_id: str) -> dict[str, Any] | None:
    client = queue_redis()
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(records.job_key(job_id))
    pipe.lrange(records.log_key(job_id), 0, -1)
    job, lines = pipe.execute()
    if not job:
        return None
    job["id"] = job_id
    job["log_lines"] = lines
    return job


def job_ids_in_state(
    queue: str, state: str, *, finished_before: float | None = None
) -> list[str]:
    key = records.state_key(queue, state)
    if finished_before is None:
        return queue_redis().zrange(key, 0, -1)
    return queue_redis().zrangebyscore(key, "-inf", finished_before)


# --- what the page shows ----------------------------------------------------
EMAIL_RE = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*(@[A-Za-z0-9.-]+\.\w+)")
PHONE_RE = re.compile(r"(?<![\w.-])(\+?\d{2})\d{4,11}(\d{2})(?![\w.-])")


def mask_personal_data(text: str) -> str:
    """Hide phone numbers and e-mail addresses (keep a hint of each)."""
    text = EMAIL_RE.sub(r"\1***\2", text)
    return PHONE_RE.sub(lambda m: f"{m.group(1)}******{m.group(2)}", text)


def job_for_display(job: dict[str, Any]) -> dict[str, Any]:
    """A job's record as people see it (page and API): secrets redacted from its
    error, traceback and log lines, even in records written before redaction."""
    shown = dict(job)
    for field in ("error", "traceback"):
        shown[field] = redact_text(job.get(field) or "")
    shown["log_lines"] = [redact_text(line) for line in job.get("log_lines", [])]
    return shown


def job_data_for_display(job: dict[str, Any]) -> str:
    try:
        data = {
            "args": json.loads(job.get("args") or "[]"),
            "kwargs": json.loads(job.get("kwargs") or "{}"),
        }
        text = json.dumps(
            redact_data(data), indent=2, sort_keys=True, ensure_ascii=False
        )
    except json.JSONDecodeError:
        text = redact_text(f"{job.get('args', '')}\n{job.get('kwargs', '')}")
    return mask_personal_data(text)


# --- health -----------------------------------------------------------------
FAILURE_RATE_ALERT = 0.05
BACKLOG_ALERT_SECONDS = 300
MEMORY_ALERT_RATIO = 0.8


def _database_health() -> dict[str, Any]:
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"status": "ok"}
    except Exception as exc:  # any driver error means the database is down
        return {"status": "down", "error": str(exc)[:200]}


def _redis_health(client) -> dict[str, Any]:
    import redis

    try:
        memory = client.info("memory")
        stats = client.info("stats")
    except redis.RedisError as exc:
        return {"status": "down", "error": str(exc)[:200]}
    used, maximum = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    return {
        "status": "ok",
        "used_memory": used,
        "maxmemory": maximum,
        "memory_ratio": round(used / maximum, 4) if maximum else None,
        "maxmemory_policy": memory.get("maxmemory_policy"),
        "evicted_keys": int(stats.get("evicted_keys", 0)),
    }


def _cache_client():
    import redis
    from django.conf import settings

    return redis.Redis.from_url(
        settings.REDIS_CACHE_URL,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
        socket_timeout=max(settings.REDIS_SOCKET_TIMEOUT, 0.5),
        decode_responses=True,
    )


def _redis_alerts(name: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    if report["status"] != "ok":
        return [
            {
                "alert": "redis_unreachable",
                "target": name,
                "message": f"{name} Redis unreachable: {report['error']}",
            }
        ]
    alerts = []
    ratio = report["memory_ratio"]
    if ratio is not None and ratio > MEMORY_ALERT_RATIO:
        alerts.append(
            {
                "alert": "redis_memory",
                "target": name,
                "message": f"{name} Redis memory at {ratio:.0%} of maxmemory",
            }
        )
    return alerts


def health_report() -> tuple[int, dict[str, Any]]:
    """GET /admin/queue/health: dependencies, workers per queue and the seed's
    alerts. 503 when the database or the broker is down, else 200 with status
    ok or degraded."""
    import redis

    database = _database_health()
    cache_client = _cache_client()
    try:
        cache = _redis_health(cache_client)
    finally:
        cache_client.close()
    broker = _redis_health(queue_redis())
    alerts = _redis_alerts("cache", cache) + _redis_alerts("broker", broker)
    if broker["status"] == "ok" and broker["maxmemory_policy"] != "noeviction":
        alerts.append(
            {
                "alert": "broker_evicts",
                "target": "broker",
                "message": (
                    f"The broker's maxmemory-policy is {broker['maxmemory_policy']!r}:"
                    " queued jobs can be evicted (use noeviction)"
                ),
            }
        )
    queues: dict[str, Any] = {}
    if broker["status"] == "ok":
        try:
            queues = _queues_health(alerts)
        except redis.RedisError as exc:
            broker = {"status": "down", "error": str(exc)[:200]}
    down = database["status"] != "ok" or broker["status"] != "ok"
    status = "down" if down else ("degraded" if alerts else "ok")
    body = {
        "status": status,
        "database": database,
        "cache": cache,
        "broker": broker,
        "queues": queues,
        "alerts": alerts,
    }
    return (503 if down else 200), body


def _queues_health(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    queues = {}
    for stats in queues_stats():
        name = stats["queue"]
        workers = workers_alive(name)
        rate, finished = queue_failure_rate(name)
        since = queue_backlog_sample(name, stats["waiting"])
        backlog_for = time.time() - since if since else 0.0
        queues[name] = {
            **stats,
            "workers": workers,
            "failure_rate_1h": round(rate, 4),
            "finished_1h": finished,
            "backlog_seconds": round(backlog_for, 1),
        }
        if not workers:
            alerts.append(
                {"alert": "no_worker", "target": name, "message": f"{name}: no worker"}
            )
        if rate > FAILURE_RATE_ALERT:
            alerts.append(
                {
                    "alert": "failure_rate",
                    "target": name,
                    "message": f"{name}: {rate:.1%} of jobs failed in the last hour",
                }
            )
        if backlog_for > BACKLOG_ALERT_SECONDS:
            alerts.append(
                {
                    "alert": "backlog",
                    "target": name,
                    "message": (
                        f"{name}: {stats['waiting']} waiting for "
                        f"{backlog_for / 60:.0f} min"
                    ),
                }
            )
    return queues


ALERT_NAMES = (
    "redis_unreachable",
    "redis_memory",
    "broker_evicts",
    "no_worker",
    "failure_rate",
    "backlog",
)
