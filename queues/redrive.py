"""Re-drive by filter: publish again the failed (or completed) jobs of a queue
that match a task, a time window, an error text and a text in their data.

How many match is known before anything happens (the dry run); the jobs are
then published again, under their ids, at a bounded rate: by the command
itself, or by a ``queues.jobs_redrive`` job on the queue for the page and API
(a web request does not sleep). Every re-drive is one logged action with its
filter and count.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.conf import settings

from queues import records
from queues.definitions import QueueSpec
from queues.models import QueueAction
from queues.publish import job_publish
from queues.selectors import job_detail, jobs_matching
from queues.services import Actor, JobActionRefused, queue_action_log, republish

logger = logging.getLogger(__name__)

REDRIVE_TASK = "queues.jobs_redrive"
REDRIVABLE_STATES = (records.FAILED, records.COMPLETED)


@dataclass(frozen=True)
class RedriveFilter:
    state: str = records.FAILED
    task: str = ""
    since: datetime | None = None
    until: datetime | None = None
    error: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        if self.state not in REDRIVABLE_STATES:
            raise ValueError(f"state must be one of {', '.join(REDRIVABLE_STATES)}")
        if self.since and self.until and self.since > self.until:
            raise ValueError("since must be before until")

    def as_params(self) -> dict[str, Any]:
        return {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in asdict(self).items()
            if v not in (None, "")
        }


def redrive_matches(*, spec: QueueSpec, where: RedriveFilter) -> list[str]:
    """The ids of the jobs a re-drive would publish again (the dry run)."""
    return jobs_matching(
        spec.name,
        where.state,
        task=where.task,
        since=where.since.timestamp() if where.since else None,
        until=where.until.timestamp() if where.until else None,
        error=where.error,
        text=where.text,
    )


def redrive_rate(rate: float | None) -> float:
    """Jobs per second, within (0, QUEUE_REDRIVE_MAX_RATE]."""
    rate = rate or settings.QUEUE_REDRIVE_RATE_PER_SECOND
    if rate <= 0:
        raise ValueError("rate must be more than 0 jobs per second")
    return min(float(rate), settings.QUEUE_REDRIVE_MAX_RATE)


def _log(spec, where, actor, count, rate, how) -> QueueAction:
    return queue_action_log(
        actor=actor,
        action=QueueAction.Action.REDRIVE,
        queue=spec.name,
        count=count,
        detail=f"{how} at {rate:g}/s",
        params={"filter": where.as_params(), "rate": rate},
    )


def queue_redrive_enqueue(
    *, spec: QueueSpec, where: RedriveFilter, actor: Actor, rate: float | None = None
) -> tuple[QueueAction, list[str]]:
    """Page and API: log the re-drive and hand the matching ids to a
    ``queues.jobs_redrive`` job on the queue, which paces them."""
    rate = redrive_rate(rate)
    ids = redrive_matches(spec=spec, where=where)
    action = _log(spec, where, actor, len(ids), rate, "queued")
    if ids:
        job_publish(
            REDRIVE_TASK,
            queue=spec,
            kwargs={"job_ids": ids, "rate": rate, "action_id": action.pk},
        )
    return action, ids


def queue_redrive_now(
    *, spec: QueueSpec, where: RedriveFilter, actor: Actor, rate: float | None = None
) -> int:
    """The command: log the re-drive and publish the jobs from this process."""
    rate = redrive_rate(rate)
    ids = redrive_matches(spec=spec, where=where)
    _log(spec, where, actor, len(ids), rate, "run")
    return jobs_redrive(job_ids=ids, rate=rate)


def jobs_redrive(*, job_ids: list[str], rate: float) -> int:
    """Publish these jobs again, at most ``rate`` a second; a job that was
    cleaned, retried or changed state since the dry run is skipped."""
    start, sent = time.monotonic(), 0
    for job_id in job_ids:
        job = job_detail(job_id)
        if job is None or job.get("state") not in REDRIVABLE_STATES:
            continue
        try:
            republish(job)
        except JobActionRefused as exc:
            logger.info("Job %s not re-driven: %s", job_id, exc)
            continue
        sent += 1
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent
