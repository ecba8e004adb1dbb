"""Redis connections: the one factory behind every Redis client of the product.

Two Redis roles, each reached by plain host and port or through Sentinel:

- ``"cache"``: REDIS_HOST/REDIS_PORT/REDIS_DB, or REDIS_SENTINELS +
  REDIS_SENTINEL_MASTER;
- ``"queue"``: the broker, job records, pause flags, heartbeats, beat's lease
  (REDIS_QUEUE_*), or REDIS_QUEUE_SENTINELS + REDIS_QUEUE_SENTINEL_MASTER.

A failover never leaves a client talking to a demoted primary: Sentinel
clients ask the sentinels for the master on every new connection and drop a
connection that answers READONLY (redis-py's SentinelManagedConnection), and
plain clients (a cloud replication group whose DNS name moves on failover) use
``FailoverConnection``, which does the same, so the next command connects
again and resolves the name again.
"""

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import redis
from django.conf import settings
from redis.sentinel import Sentinel

Role = Literal["cache", "queue"]


def raw_key(key: str, key_prefix: str, version: int) -> str:
    """Cache key function: store keys under exactly their documented names."""
    return key


class FailoverConnection(redis.Connection):
    """A connection that closes itself when the server says it is a replica.

    After a failover behind a moving DNS name, pooled connections still reach
    the demoted node, which answers every write with READONLY. Raising a
    ConnectionError (after disconnecting) makes every caller treat it as the
    connection failure it is: redis-py reconnects, kombu re-establishes,
    the cache fails open for a moment."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.exceptions.ReadOnlyError as exc:
            self.disconnect()
            raise redis.ConnectionError(
                f"{self.host}:{self.port} is a read-only replica now (failover); "
                "reconnecting"
            ) from exc


def sentinel_addresses(value: list[str] | tuple[str, ...]) -> list[tuple[str, int]]:
    """``["host:port", ...]`` (REDIS_SENTINELS) as (host, port) pairs."""
    addresses = []
    for item in value:
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"A sentinel is host:port, not {item!r}")
        addresses.append((host, int(port)))
    return addresses


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int
    db: int
    password: str
    sentinels: tuple[tuple[str, int], ...]
    master: str


def redis_target(role: Role) -> RedisTarget:
    """Where the cache's or the broker's Redis is, from the settings."""
    if role == "cache":
        return RedisTarget(
            settings.REDIS_HOST,
            settings.REDIS_PORT,
            settings.REDIS_DB,
            settings.REDIS_PASSWORD,
            tuple(sentinel_addresses(settings.REDIS_SENTINELS)),
            settings.REDIS_SENTINEL_MASTER,
        )
    return RedisTarget(
        settings.REDIS_QUEUE_HOST,
        settings.REDIS_QUEUE_PORT,
        settings.REDIS_QUEUE_DB,
        settings.REDIS_QUEUE_PASSWORD,
        tuple(sentinel_addresses(settings.REDIS_QUEUE_SENTINELS)),
        settings.REDIS_QUEUE_SENTINEL_MASTER,
    )


def sentinel_kwargs(**options: Any) -> dict[str, Any]:
    """Options of the connections to the sentinels themselves."""
    kwargs = {
        "socket_timeout": options.get("socket_timeout", 1),
        "socket_connect_timeout": options.get("socket_connect_timeout", 1),
    }
    if settings.REDIS_SENTINEL_PASSWORD:
        kwargs["password"] = settings.REDIS_SENTINEL_PASSWORD
    return kwargs


def redis_client(role: Role, **options: Any) -> redis.Redis:
    """A new client of the cache's or the broker's Redis (its current master
    when Sentinel is configured); ``options`` are redis-py connection options."""
    target = redis_target(role)
    password = target.password or None
    if target.sentinels:
        sentinel = Sentinel(
            list(target.sentinels), sentinel_kwargs=sentinel_kwargs(**options)
        )
        return sentinel.master_for(
            target.master, db=target.db, password=password, **options
        )
    url = settings.REDIS_CACHE_URL if role == "cache" else settings.REDIS_QUEUE_URL
    pool = redis.ConnectionPool.from_url(
        url, connection_class=FailoverConnection, **options
    )
    return redis.Redis(connection_pool=pool)


@cache
def queue_redis() -> redis.Redis:
    """The broker's Redis (REDIS_QUEUE_DB): job records and queue state live here."""
    return redis_client(
        "queue",
        socket_connect_timeout=1,
        socket_timeout=2,
        health_check_interval=30,
        decode_responses=True,
    )


def cache_redis():
    """The raw client behind the default django-redis cache (REDIS_DB)."""
    from django_redis import get_redis_connection

    return get_redis_connection("default")
