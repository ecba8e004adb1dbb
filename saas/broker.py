"""The Celery broker's connection: plain Redis or Sentinel, from the settings.

- Sentinel (REDIS_QUEUE_SENTINELS): kombu's Sentinel transport, which asks the
  sentinels for the master on every connection and drops one that answers
  READONLY; workers re-establish on the new primary by themselves.
- Plain host and port: kombu's Redis transport with ``FailoverConnection``, so
  a managed replication group whose DNS name moves on failover is reconnected
  to instead of written to as a read-only replica forever.
"""

from typing import Any

from django.conf import settings
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from saas.redis import FailoverConnection, redis_target, sentinel_kwargs


class FailoverChannel(kombu_redis.Channel):
    connection_class = FailoverConnection


class FailoverTransport(kombu_redis.Transport):
    Channel = FailoverChannel


def failover_transport_register() -> None:
    """``redis://`` URLs use FailoverTransport (the scheme stays ``redis`` for
    Flower and every URL the product shows)."""
    TRANSPORT_ALIASES["redis"] = "saas.broker:FailoverTransport"


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
