"""The Celery broker's connection: plain Redis or Sentinel, from the settings.

- Sentinel (REDIS_QUEUE_SENTINELS): kombu's Sentinel transport, which asks the
  sentinels for the master on every connection and drops one that answers
  READONLY; workers re-establish on the new primary by themselves.
- Plain host and port: kombu's Redis transport with ``FailoverConnection``, so
  a managed replication group whose DNS name moves on failover is reconnected
  to instead of written to as a read-only replica forever.
"""

from typing import Any

import redis
from django.conf import settings
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from saas.redis import FailoverConnection, redis_target, sentinel_kwargs


class ClosedConnectionGuard:
    """kombu 5.7 builds a new pool while a channel closes after its connection
    was released (to restore unacknowledged messages) and dies on
    ``None.hostname``: an AttributeError that exits the worker. A connection
    error instead is one the consumer ignores while closing and recovers from
    by reconnecting; the messages stay in the unacked set and come back after
    the visibility timeout, as they would after the crash."""

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise redis.ConnectionError(
                "broker connection already closed; its unacknowledged jobs come "
                "back after the visibility timeout"
            )
        return super()._connparams(asynchronous)


class FailoverChannel(ClosedConnectionGuard, kombu_redis.Channel):
    connection_class = FailoverConnection


class FailoverTransport(kombu_redis.Transport):
    Channel = FailoverChannel


class FailoverSentinelChannel(ClosedConnectionGuard, kombu_redis.SentinelChannel):
    pass


class FailoverSentinelTransport(kombu_redis.SentinelTransport):
    Channel = FailoverSentinelChannel


def failover_transport_register() -> None:
    """``redis://`` and ``sentinel://`` URLs use the transports above (the
    schemes stay as they are for Flower and every URL the product shows)."""
    TRANSPORT_ALIASES["redis"] = "saas.broker:FailoverTransport"
    TRANSPORT_ALIASES["sentinel"] = "saas.broker:FailoverSentinelTransport"


def broker_url() -> str:
    target = redis_target("queue")
    if not target.sentinels:
        return settings.REDIS_QUEUE_URL
    auth = f":{target.password}@" if target.password else ""
    return ";".join(
        f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.sentinels
    )


def broker_sentinel_options(**socket_options: Any) -> dict[str, Any]:
    """Transport options the Sentinel transport needs (none without Sentinel)."""
    target = redis_target("queue")
    if not target.sentinels:
        return {}
    return {
        "master_name": target.master,
        "sentinel_kwargs": sentinel_kwargs(**socket_options),
    }
