"""Which Redis instance serves the broker, as its watchers last saw it.

A Sentinel failover (or a restart) puts another Redis instance behind the
broker. Replication is asynchronous, so the jobs published in the last
instants before the switch, and their records, may be gone with the old
primary. Jobs whose rows are in PostgreSQL come back from their own
re-drives; a watcher that has rows to re-drive from after a switch (delivery
statuses from the webhook inbox) asks here whether the broker changed since
it last looked.

The instance is known by its ``run_id`` (INFO server): a new one for every
Redis process, so a promoted replica or a restarted primary both count.
"""

from __future__ import annotations

from queues.keys import broker_seen_key
from saas.redis import queue_redis


def broker_switched(watcher: str) -> tuple[bool, float | None]:
    """Whether the broker's Redis instance changed since ``watcher`` last
    called, and when (Redis server time) the watcher last saw the one before
    (None when it never saw one, or the switch lost the key too).

    Records the current instance for the next call."""
    client = queue_redis()
    run_id = client.info("server")["run_id"]
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    key = broker_seen_key(watcher)
    seen_run_id, seen_at = client.hmget(key, "run_id", "at")
    client.hset(key, mapping={"run_id": run_id, "at": repr(now)})
    if seen_run_id == run_id:
        return False, None
    return True, float(seen_at) if seen_at else None
