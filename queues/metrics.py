"""GET /metrics: Prometheus text, read from Redis at scrape time.

Workers are separate processes, so nothing is counted in this one: job counts
and durations come from the job records (queues/records.py), cache hits and
misses from saas.cache when that module is installed, alerts from the health
report.
"""

import hmac
import os
import threading
import time

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from queues import records
from queues.definitions import QUEUES
from queues.health import ALERT_NAMES, health_report
from queues.keys import duration_key
from queues.selectors import queue_last_take, queues_stats, workers_alive
from saas.redis import queue_redis

STATES = ("waiting", "active", "delayed", "completed", "failed")


def _cache_stats() -> dict:
    try:
        from saas.cache import cache_stats
    except ImportError:
        return {}
    return cache_stats()


class QueueCollector:
    def collect(self):
        jobs = GaugeMetricFamily(
            "queue_jobs", "Jobs per queue and state.", labels=["queue", "state"]
        )
        paused = GaugeMetricFamily(
            "queue_paused", "1 when the queue is paused.", labels=["queue"]
        )
        for stats in queues_stats():
            for state in STATES:
                jobs.add_metric([stats["queue"], state], stats[state])
            paused.add_metric([stats["queue"]], int(stats["paused"]))
        yield jobs
        yield paused
        yield self._last_takes()
        yield self._durations()
        yield from self._cache()
        yield self._alerts()

    def _last_takes(self):
        family = GaugeMetricFamily(
            "queue_last_take_age_seconds",
            "Seconds since a live worker of the queue last took a job of it.",
            labels=["queue"],
        )
        now = time.time()
        for spec in QUEUES:
            last = queue_last_take(spec.name, workers_alive(spec.name))
            if last is not None:
                family.add_metric([spec.name], round(now - last, 3))
        return family

    def _durations(self):
        family = HistogramMetricFamily(
            "queue_job_duration_seconds",
            "Time from a job's start to its end, per attempt.",
            labels=["queue"],
        )
        pipe = queue_redis().pipeline(transaction=False)
        for spec in QUEUES:
            pipe.hgetall(duration_key(spec.name))
        for spec, counts in zip(QUEUES, pipe.execute(), strict=True):
            cumulative, buckets = 0, []
            for bound in records.DURATION_BUCKETS:
                cumulative += int(counts.get(repr(float(bound)), 0))
                buckets.append((repr(float(bound)), cumulative))
            buckets.append(("+Inf", int(counts.get("count", 0))))
            family.add_metric(
                [spec.name], buckets, sum_value=float(counts.get("sum", 0) or 0)
            )
        return family

    def _cache(self):
        # saas.cache counts per process; the pid label keeps each web
        # process's counter its own series (sum them in the query).
        hits = CounterMetricFamily(
            "cache_hits", "Cache hits per namespace.", labels=["namespace", "pid"]
        )
        misses = CounterMetricFamily(
            "cache_misses", "Cache misses per namespace.", labels=["namespace", "pid"]
        )
        pid = str(os.getpid())
        for namespace, stats in _cache_stats().items():
            hits.add_metric([namespace, pid], stats.get("hits", 0))
            misses.add_metric([namespace, pid], stats.get("misses", 0))
        yield hits
        yield misses

    def _alerts(self):
        family = GaugeMetricFamily(
            "queue_alert", "1 while the alert holds.", labels=["alert", "target"]
        )
        _, report = health_report()
        active = {(a["alert"], a["target"]) for a in report["alerts"]}
        targets = {
            "redis_unreachable": ("cache", "broker"),
            "redis_memory": ("cache", "broker"),
            "broker_evicts": ("broker",),
        }
        for alert in ALERT_NAMES:
            for target in targets.get(alert, [spec.name for spec in QUEUES]):
                family.add_metric([alert, target], int((alert, target) in active))
        return family


registry = CollectorRegistry(auto_describe=False)
registry.register(QueueCollector())

_LOOPBACK = frozenset({"127.0.0.1", "::1"})
_rendered: tuple[float, bytes] = (0.0, b"")
_render_lock = threading.Lock()


def _scrape_allowed(request) -> bool:
    """With ``METRICS_TOKEN`` set, only a scrape bearing it; without, only
    from this machine (a sidecar or a local Prometheus)."""
    token = settings.METRICS_TOKEN
    if not token:
        return request.META.get("REMOTE_ADDR") in _LOOPBACK
    given = request.META.get("HTTP_AUTHORIZATION", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _render() -> bytes:
    """The exposition, computed at most once per ``METRICS_CACHE_SECONDS`` per
    process: a scrape storm costs one health report, not one each."""
    global _rendered
    with _render_lock:
        rendered_at, body = _rendered
        if time.monotonic() - rendered_at >= settings.METRICS_CACHE_SECONDS or not body:
            body = generate_latest(registry)
            _rendered = (time.monotonic(), body)
        return body


def metrics_view(request):
    if not _scrape_allowed(request):
        response = HttpResponse("Metrics need the scrape token.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(_render(), content_type=CONTENT_TYPE_LATEST)
