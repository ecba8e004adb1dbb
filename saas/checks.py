"""System checks: the broker's Redis must not evict queued jobs; the queue page
must live in the admin."""

import logging

import redis
from django.conf import settings
from django.core import checks

from queues.definitions import queue_page_prefix
from saas.redis import redis_client, redis_target

logger = logging.getLogger(__name__)

NO_EVICTION = "noeviction"


def _maxmemory_policy() -> str | None:
    client = redis_client("queue", socket_connect_timeout=1, socket_timeout=1)
    try:
        return client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.RedisError as exc:
        logger.warning("Cannot read the broker's maxmemory-policy: %s", exc)
        return None
    finally:
        client.close()


def _broker_where() -> str:
    target = redis_target("queue")
    if target.sentinels:
        return f"Sentinel master {target.master!r}"
    return f"{target.host}:{target.port}"


def _same_instance() -> bool:
    cache, queue = redis_target("cache"), redis_target("queue")
    if cache.sentinels or queue.sentinels:
        return (set(cache.sentinels), cache.master) == (
            set(queue.sentinels),
            queue.master,
        )
    return (cache.host, cache.port) == (queue.host, queue.port)


@checks.register(checks.Tags.caches, "redis")
def check_broker_eviction_policy(
    app_configs=None, **kwargs
) -> list[checks.CheckMessage]:
    policy = _maxmemory_policy()
    if policy is None or policy == NO_EVICTION:
        return []
    where = _broker_where()
    if _same_instance():
        return [
            checks.Error(
                f"The cache and the Celery broker share the Redis at {where}, whose "
                f"maxmemory-policy is {policy!r}: cache pressure will evict queued "
                "jobs.",
                hint="Run the broker on its own Redis (REDIS_QUEUE_HOST/"
                "REDIS_QUEUE_PORT) with maxmemory-policy noeviction.",
                id="saas.E001",
            )
        ]
    return [
        checks.Warning(
            f"The Celery broker's Redis at {where} has maxmemory-policy {policy!r}; "
            "under memory pressure it can silently delete queued jobs.",
            hint="Set maxmemory-policy noeviction on the broker's Redis.",
            id="saas.W001",
        )
    ]


@checks.register(checks.Tags.urls)
def check_queue_dashboard_path(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The queue page lives in the admin site (its login, its look)."""
    if not settings.QUEUE_DASHBOARD_ENABLED or queue_page_prefix(
        settings.QUEUE_DASHBOARD_PATH
    ):
        return []
    return [
        checks.Error(
            f"QUEUE_DASHBOARD_PATH={settings.QUEUE_DASHBOARD_PATH!r} is not under "
            "/admin/.",
            hint="The queue page uses the admin's login: use a path like "
            "/admin/queues.",
            id="saas.E002",
        )
    ]
