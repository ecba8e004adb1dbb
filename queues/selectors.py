"""Reads: queue stats, job lists and details, throughput, worker heartbeats.

Health checks and alerts are in queues/health.py."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from queues import records
from queues.definitions import QUEUES, QueueSpec
from queues.keys import (
    PAUSED_KEY,
    broker_lists,
    job_key,
    last_take_key,
    log_key,
    minute_key,
    state_key,
    workers_key,
)
from saas.redaction import redact_data, redact_text
from saas.redis import queue_redis

SEARCH_SCAN_LIMIT = 50_000
SEARCH_CHUNK = 1000


def _stats_commands(pipe, queue: str) -> None:
    for key in broker_lists(queue):
        pipe.llen(key)
    for state in (records.DELAYED, records.ACTIVE, records.COMPLETED, records.FAILED):
        pipe.zcard(state_key(queue, state))
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


def queue_last_take(queue: str, workers: list[str]) -> float | None:
    """When the latest of ``workers`` last took a job of ``queue`` (or started
    consuming it); None if none of them ever did."""
    if not workers:
        return None
    takes = queue_redis().hmget(last_take_key(queue), workers)
    return max((float(t) for t in takes if t), default=None)


def queue_oldest_waiting(queue: str) -> float | None:
    """When the longest-waiting job of ``queue`` was published (job records)."""
    oldest = queue_redis().zrange(
        state_key(queue, records.WAITING), 0, 0, withscores=True
    )
    return oldest[0][1] if oldest else None


def queue_throughput(queue: str, *, minutes: int = 60) -> list[dict[str, Any]]:
    """Completed and failed jobs per minute, oldest first, ending this minute."""
    now_minute = int(time.time() // 60)
    span = range(now_minute - minutes + 1, now_minute + 1)
    keys = [minute_key(queue, records.COMPLETED, m) for m in span] + [
        minute_key(queue, records.FAILED, m) for m in span
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
        pipe.hmget(job_key(job_id), fields)
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
    key = state_key(spec.name, state)
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


def jobs_matching(
    queue: str,
    state: str,
    *,
    task: str = "",
    since: float | None = None,
    until: float | None = None,
    error: str = "",
    text: str = "",
) -> list[str]:
    """Ids of a queue's jobs in ``state`` that entered it within [since, until],
    ran ``task`` (exact name), and whose error and data contain the given
    texts (case-insensitive); oldest first, at most SEARCH_SCAN_LIMIT."""
    client = queue_redis()
    ids = client.zrangebyscore(
        state_key(queue, state),
        "-inf" if since is None else since,
        "+inf" if until is None else until,
        start=0,
        num=SEARCH_SCAN_LIMIT,
    )
    error, text = error.lower(), text.lower()
    matched = []
    fields = ("task", "error", "args", "kwargs")
    for offset in range(0, len(ids), SEARCH_CHUNK):
        for row in _rows(client, ids[offset : offset + SEARCH_CHUNK], fields):
            data = f"{row.get('args') or ''} {row.get('kwargs') or ''}".lower()
            if (
                (not task or row.get("task") == task)
                and (not error or error in (row.get("error") or "").lower())
                and (not text or text in data)
            ):
                matched.append(row["id"])
    return matched


def job_detail(job_id: str) -> dict[str, Any] | None:
    client = queue_redis()
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(job_key(job_id))
    pipe.lrange(log_key(job_id), 0, -1)
    job, lines = pipe.execute()
    if not job:
        return None
    job["id"] = job_id
    job["log_lines"] = lines
    return job


def job_ids_in_state(
    queue: str, state: str, *, finished_before: float | None = None
) -> list[str]:
    key = state_key(queue, state)
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
