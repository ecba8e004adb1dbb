"""Health: the dependencies, workers per queue and the seed's alerts
(GET /admin/queue/health, /metrics), and the backlog clock workers keep."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import connection

from queues.keys import backlog_key, broker_lists
from queues.selectors import (
    queue_failure_rate,
    queue_last_take,
    queue_oldest_waiting,
    queues_stats,
    workers_alive,
)
from saas.redis import queue_redis, redis_client

logger = logging.getLogger(__name__)

#: Sections other apps add to the health report, by registration in their
#: AppConfig.ready() (a lower layer never imports them): name -> fn(alerts).
HEALTH_SECTIONS: dict[str, Callable[[list[dict[str, Any]]], Any]] = {}

BACKLOG_THRESHOLD = 1000
FAILURE_RATE_ALERT = 0.05
BACKLOG_ALERT_SECONDS = 300
MEMORY_ALERT_RATIO = 0.8


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


def _database_health() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"status": "ok"}
    except Exception as exc:  # any driver error means the database is down
        return {"status": "down", "error": str(exc)[:200]}


def _redis_health(client) -> dict[str, Any]:
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
    return redis_client(
        "cache",
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
    sections: dict[str, Any] = {}
    for name, section in HEALTH_SECTIONS.items():
        try:
            sections[name] = section(alerts)
        except Exception as exc:  # a section never takes the report down
            logger.warning("Health section %s failed: %r", name, exc)
            sections[name] = {"error": str(exc)[:200]}
    down = database["status"] != "ok" or broker["status"] != "ok"
    status = "down" if down else ("degraded" if alerts else "ok")
    body = {
        "status": status,
        "database": database,
        "cache": cache,
        "broker": broker,
        "queues": queues,
        **sections,
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
        last_take = queue_last_take(name, workers)
        queues[name] = {
            **stats,
            "workers": workers,
            "failure_rate_1h": round(rate, 4),
            "finished_1h": finished,
            "backlog_seconds": round(backlog_for, 1),
            "last_take_seconds": (
                round(time.time() - last_take, 1) if last_take else None
            ),
        }
        if _stalled(stats, workers, last_take):
            alerts.append(
                {
                    "alert": "queue_stalled",
                    "target": name,
                    "message": (
                        f"{name}: {stats['waiting']} waiting and none of its "
                        f"{len(workers)} live workers took a job for over "
                        f"{settings.QUEUE_STALLED_SECONDS:.0f} s (a consumer "
                        "connected but not consuming: restart the worker)"
                    ),
                }
            )
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


def _stalled(stats: dict[str, Any], workers: list[str], last_take) -> bool:
    """Jobs wait, the queue is not paused, workers are alive, and none of them
    took a job for QUEUE_STALLED_SECONDS, while the oldest job has waited at
    least as long (a burst on an idle queue is not a stall)."""
    if not stats["waiting"] or stats["paused"] or not workers:
        return False
    limit = time.time() - settings.QUEUE_STALLED_SECONDS
    if last_take is not None and last_take > limit:
        return False
    oldest = queue_oldest_waiting(stats["queue"])
    return oldest is None or oldest <= limit


ALERT_NAMES = (
    "redis_unreachable",
    "redis_memory",
    "broker_evicts",
    "no_worker",
    "failure_rate",
    "backlog",
    "queue_stalled",
)
