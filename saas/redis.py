"""Redis connections shared by the cache, the broker checks and job records."""

from functools import cache

import redis
from django.conf import settings


def raw_key(key: str, key_prefix: str, version: int) -> str:
    """Cache key function: store keys under exactly their documented names."""
    return key


@cache
def queue_redis() -> redis.Redis:
    """The broker's Redis (REDIS_QUEUE_DB): job records and queue state live here."""
    return redis.Redis.from_url(
        settings.REDIS_QUEUE_URL,
        socket_connect_timeout=1,
        socket_timeout=2,
        health_check_interval=30,
        decode_responses=True,
    )


def cache_redis():
    """The raw client behind the default django-redis cache (REDIS_DB)."""
    from django_redis import get_redis_connection

    return get_redis_connection("default")
