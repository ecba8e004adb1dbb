"""Several beats, each periodic task sent once per period.

Every beat runs ``LeaderScheduler`` (django-celery-beat's database scheduler
behind a lease): the beat holding ``queues:beat:leader`` on the broker's Redis
sends what is due, the others stand by and take over within
``BEAT_LEASE_SECONDS`` when it dies. A hand-over (or a lease lost in a Redis
failover) could let two beats send the same entry: each send first claims
``queues:beat:sent:{name}`` for 90 % of the entry's period, so the second
beat's send of the same period is skipped. Every periodic task is safe to run
twice anyway (the dispatcher claims rows with SKIP LOCKED; the re-drives
publish what is still pending), so this is about not doing work twice, not
about correctness.
"""

import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from queues.keys import BEAT_LEADER_KEY, beat_sent_key
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

#: Take or renew the lease when it is free or already ours.
_HOLD_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


def beat_lease_hold(token: str, seconds: float) -> bool:
    """True when the beat named ``token`` holds the lease (taken or renewed)."""
    return bool(
        queue_redis().eval(_HOLD_LEASE, 1, BEAT_LEADER_KEY, token, int(seconds * 1000))
    )


def beat_send_claim(entry_name: str, period: timedelta | None) -> bool:
    """False when another beat already sent ``entry_name`` in this period."""
    if not period or period.total_seconds() <= 0:
        return True
    ttl_ms = max(int(period.total_seconds() * 900), 1)
    return bool(queue_redis().set(beat_sent_key(entry_name), "1", nx=True, px=ttl_ms))


class LeaderScheduler(DatabaseScheduler):
    """DatabaseScheduler that sends only while it holds the beat lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.lease_token = f"{socket.gethostname()}:{os.getpid()}:{suffix}"
        self.is_leader: bool | None = None  # unknown: the first state is logged
        super().__init__(*args, **kwargs)

    def _hold(self) -> bool:
        try:
            leader = beat_lease_hold(self.lease_token, settings.BEAT_LEASE_SECONDS)
        except redis.RedisError as exc:
            logger.warning("Beat lease unreadable (%s); not sending", exc)
            leader = False
        if leader != self.is_leader:
            logger.info(
                "Beat %s %s",
                self.lease_token,
                "holds the lease: sending" if leader else "standing by",
            )
            self.is_leader = leader
        return leader

    def tick(self, *args: Any, **kwargs: Any) -> float:
        renew_every = settings.BEAT_LEASE_SECONDS / 3
        if not self._hold():
            return renew_every
        return min(super().tick(*args, **kwargs), renew_every)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        period = getattr(entry.schedule, "run_every", None)
        try:
            claimed = beat_send_claim(entry.name, period)
        except redis.RedisError as exc:
            logger.warning("Beat cannot claim %s (%s); not sent", entry.name, exc)
            return None
        if not claimed:
            logger.info("%s was sent by another beat this period; skipped", entry.name)
            return None
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
