"""Jobs the broker lost, found by their records and published again.

kombu's Redis transport takes a message off a queue's list (BRPOP) and only
then keeps it in its ``unacked`` hash; a worker SIGKILLed between the two
loses the message: it is in no list, no worker holds it, and its job never
starts (bench/soak.py saw it happen to a delivery-status job). Jobs whose
source of truth is a PostgreSQL row are re-driven from it by their own beat
tasks; this sweep covers every job, including those that have no such row
(delivery statuses, the operators' test jobs).

A job is *missing* when its record (queues/records.py) says it waits (or its
delay ended) for longer than QUEUE_LOST_JOB_AFTER_SECONDS, and neither the
queue's lists nor the ``unacked`` hash holds its message. A missing job is a
suspect first; a suspect still missing at a later sweep, at least
QUEUE_LOST_JOB_CONFIRM_SECONDS later, is published again under its id (its
record goes on, as a retry's does). The second look is what makes the sweep
safe against the instants when a message is between two places (taken off a
list, not yet in ``unacked``; acknowledged, its record not yet written).
Paused queues are skipped: their jobs wait on purpose.

What it cannot see: a list too long to scan whose oldest message is older
than the job (a backlog: the job is presumed there, and looked at again at
the next sweep). At-least-once: every task is idempotent, and a job found
lost twice is published twice at most once per sweep.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings

from queues import records
from queues.definitions import QUEUES, QueueSpec
from queues.keys import (
    LOST_SUSPECTS_KEY,
    UNACKED_KEY,
    broker_lists,
    job_key,
    state_key,
)
from queues.selectors import job_detail, queue_paused_names
from queues.services import JobActionRefused, republish
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

LOST_JOBS_TASK = "queues.lost_jobs_recover"
#: Most candidates looked at per queue and sweep (the oldest first).
CANDIDATES_MAX = 500
#: A list this long or shorter is read whole; a longer one only by its oldest
#: message (kombu pushes on the left and pops on the right).
SCAN_MAX = 5000
#: Publishers' clocks differ by this much at most.
CLOCK_SKEW_SECONDS = 5.0


@dataclass
class LostJobsReport:
    suspects: int = 0
    recovered: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)


def _eta_passed(eta: str, before: float) -> bool:
    try:
        return datetime.fromisoformat(eta).timestamp() < before
    except ValueError:
        return False


def _candidates(client, queue: str, before: float) -> dict[str, float]:
    """Job id -> when it was published, of the jobs that should have started
    by ``before``: waiting since before it, or delayed until before it."""

    def overdue(state: str) -> list[tuple[str, float]]:
        return client.zrangebyscore(
            state_key(queue, state),
            "-inf",
            before,
            start=0,
            num=CANDIDATES_MAX,
            withscores=True,
        )

    found = dict(overdue(records.WAITING))
    delayed = overdue(records.DELAYED)
    if delayed:
        with client.pipeline(transaction=False) as pipe:
            for job_id, _ in delayed:
                pipe.hget(job_key(job_id), "eta")
            etas = pipe.execute()
        for (job_id, published), eta in zip(delayed, etas, strict=True):
            if eta and _eta_passed(eta, before):
                found[job_id] = published
    return found


def _message_id(raw: str) -> str | None:
    try:
        return json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None


def _held_by_lists(client, spec: QueueSpec, candidates: dict[str, float]) -> set[str]:
    """The candidates a list of the queue holds, or may hold (a long list
    whose oldest message is older than them)."""
    keys = broker_lists(spec.name)
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.llen(key)
        lengths = pipe.execute()
    held: set[str] = set()
    for key, length in zip(keys, lengths, strict=True):
        if not length:
            continue
        if length <= SCAN_MAX:
            ids = {_message_id(raw) for raw in client.lrange(key, 0, -1)}
            held |= ids & candidates.keys()
            continue
        oldest_id = _message_id(client.lindex(key, -1) or "")
        oldest = client.zscore(state_key(spec.name, records.WAITING), oldest_id or "")
        for job_id, published in candidates.items():
            # FIFO: a job published before the list's oldest message was
            # taken off it already, unless the oldest is unknown or older.
            if oldest is None or oldest <= published + CLOCK_SKEW_SECONDS:
                held.add(job_id)
    return held


def _held_unacked(client) -> set[str]:
    """Ids of the messages workers hold (delivered, not acknowledged)."""
    held = set()
    for _, value in client.hscan_iter(UNACKED_KEY, count=1000):
        try:
            message = json.loads(value)[0]
        except (ValueError, IndexError, TypeError):
            continue
        if isinstance(message, dict):
            held.add((message.get("headers") or {}).get("id"))
    return held


def _still_missing(missing: dict[str, float]) -> list[dict]:
    """The records of the missing jobs that still wait as they did (a job
    that started or was published again meanwhile is not missing)."""
    jobs = []
    for job_id in missing:
        job = job_detail(job_id)
        if job and job.get("state") in (records.WAITING, records.DELAYED):
            jobs.append(job)
    return jobs


def _republish(job: dict, report: LostJobsReport) -> None:
    try:
        republish(job)
    except JobActionRefused as exc:
        records.record_transition(
            job_id=job["id"],
            queue=job["queue"],
            state=records.FAILED,
            fields={"error": f"Lost by the broker; not published again: {exc}"},
        )
        report.unrecoverable.append(job["id"])
        logger.error("Job %s (%s) was lost: %s", job["id"], job.get("task"), exc)
        return
    report.recovered.append(job["id"])
    logger.warning(
        "Job %s (%s on %s) was lost by the broker; published again",
        job["id"],
        job.get("task"),
        job["queue"],
    )


def lost_jobs_recover(*, now: float | None = None) -> LostJobsReport:
    """One sweep over every queue that is not paused (see the module's
    docstring); beat runs it every minute."""
    client = queue_redis()
    now = time.time() if now is None else now
    before = now - settings.QUEUE_LOST_JOB_AFTER_SECONDS
    paused = queue_paused_names()
    suspects = {k: float(v) for k, v in client.hgetall(LOST_SUSPECTS_KEY).items()}
    report = LostJobsReport()
    missing: dict[str, float] = {}
    for spec in QUEUES:
        if spec.name in paused:
            continue
        candidates = _candidates(client, spec.name, before)
        if not candidates:
            continue
        held = _held_by_lists(client, spec, candidates)  # lists, then unacked:
        held |= _held_unacked(client)  # a message moves from one to the other
        missing |= {k: v for k, v in candidates.items() if k not in held}
    confirmed = now - settings.QUEUE_LOST_JOB_CONFIRM_SECONDS
    new_suspects = {}
    for job in _still_missing(missing):
        seen = suspects.get(job["id"])
        if seen is not None and seen <= confirmed:
            _republish(job, report)
        else:
            new_suspects[job["id"]] = seen if seen is not None else now
    with client.pipeline() as pipe:
        pipe.delete(LOST_SUSPECTS_KEY)
        if new_suspects:
            pipe.hset(LOST_SUSPECTS_KEY, mapping=new_suspects)
            pipe.expire(LOST_SUSPECTS_KEY, 24 * 3600)
        pipe.execute()
    report.suspects = len(new_suspects)
    return report
