"""The operators' actions on queues and jobs: pause, resume, clean, retry,
remove, and the test job. Publishing is queues/publish.py; the seed's
QueueService facade is queues/facade.py.

Every operator action is logged with who did it (a QueueAction row and a log
line). Queue names accept the full name or the alias (queues.definitions).
"""

import json
import logging
import time
from typing import Any

from celery import current_app
from django.contrib.auth.models import AbstractBaseUser

from queues import records
from queues.definitions import QueueSpec, queue_spec
from queues.keys import PAUSED_KEY, broker_lists, job_key, log_key, state_key
from queues.models import QueueAction
from queues.publish import job_publish
from queues.selectors import job_detail, job_ids_in_state, queue_stats, workers_alive
from saas.redaction import redact_data
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

TEST_TASK = "queues.test_job"

CLEANABLE_STATES = (records.COMPLETED, records.FAILED)

Actor = AbstractBaseUser | str | None


class JobNotFound(LookupError):
    pass


class JobActionRefused(ValueError):
    """The job is in a state the action does not apply to."""


# --- operators' actions -----------------------------------------------------
def _actor_fields(actor: Actor) -> dict[str, Any]:
    if isinstance(actor, AbstractBaseUser):
        return {"actor": actor, "actor_name": actor.get_username()}
    return {"actor": None, "actor_name": actor or "system"}


def queue_action_log(
    *,
    actor: Actor,
    action: str,
    queue: str,
    job_id: str = "",
    count: int = 0,
    detail: str = "",
    params: dict[str, Any] | None = None,
) -> QueueAction:
    entry = QueueAction.objects.create(
        action=action,
        queue=queue,
        job_id=job_id,
        count=count,
        detail=detail[:200],
        params=params or {},
        **_actor_fields(actor),
    )
    logger.info(
        "queue action: %s %s queue=%s job=%s count=%s %s",
        entry.actor_name,
        action,
        queue,
        job_id or "-",
        count,
        detail,
    )
    return entry


def _broadcast(command: str, spec: QueueSpec) -> None:
    """Tell the queue's live workers (from their heartbeats) at once; the
    workers' polling of the flags is the fallback when a broadcast is missed."""
    workers = workers_alive(spec.name)
    if not workers:
        return
    try:
        current_app.control.broadcast(
            command, arguments={"queue": spec.name}, destination=workers, reply=False
        )
    except Exception as exc:  # kombu raises several unrelated types here
        logger.warning("%s not broadcast to %s: %r", command, spec.name, exc)


def queue_pause(*, spec: QueueSpec, actor: Actor) -> dict[str, Any]:
    """Once this returns, no job of the queue starts anywhere until it is
    resumed: a worker that took one before seeing the flag hands it back as it
    is about to start (queues/requests.py). Running jobs finish; the flag
    outlives worker restarts."""
    queue_redis().sadd(PAUSED_KEY, spec.name)
    _broadcast("queues_hold", spec)
    queue_action_log(actor=actor, action=QueueAction.Action.PAUSE, queue=spec.name)
    return queue_stats(spec)


def queue_resume(*, spec: QueueSpec, actor: Actor) -> dict[str, Any]:
    queue_redis().srem(PAUSED_KEY, spec.name)
    _broadcast("queues_release", spec)
    queue_action_log(actor=actor, action=QueueAction.Action.RESUME, queue=spec.name)
    return queue_stats(spec)


def _clean_targets(spec: QueueSpec, grace_ms: int, status: str) -> list[str]:
    if status not in CLEANABLE_STATES:
        raise ValueError(f"status must be one of {', '.join(CLEANABLE_STATES)}")
    if grace_ms < 0:
        raise ValueError("grace must be zero or more milliseconds")
    return job_ids_in_state(
        spec.name, status, finished_before=time.time() - grace_ms / 1000
    )


def queue_clean_count(*, spec: QueueSpec, grace_ms: int, status: str) -> int:
    """How many jobs queue_clean would remove (shown before confirming)."""
    return len(_clean_targets(spec, grace_ms, status))


def queue_clean(*, spec: QueueSpec, grace_ms: int, status: str, actor: Actor) -> int:
    """Remove the records of jobs finished in ``status`` more than ``grace_ms`` ago."""
    ids = _clean_targets(spec, grace_ms, status)
    client = queue_redis()
    for start in range(0, len(ids), 1000):
        pipe = client.pipeline(transaction=False)
        chunk = ids[start : start + 1000]
        pipe.delete(*(job_key(i) for i in chunk))
        pipe.delete(*(log_key(i) for i in chunk))
        pipe.zrem(state_key(spec.name, status), *chunk)
        pipe.execute()
    queue_action_log(
        actor=actor,
        action=QueueAction.Action.CLEAN,
        queue=spec.name,
        count=len(ids),
        detail=f"status={status} grace_ms={grace_ms}",
    )
    return len(ids)


def _job_or_404(job_id: str) -> dict[str, Any]:
    job = job_detail(job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def republish(job: dict[str, Any]) -> None:
    if job.get("truncated"):
        raise JobActionRefused(
            "This job's data was too large to keep in full; it cannot be retried."
        )
    if job.get("redacted"):
        raise JobActionRefused(
            "This job's data held secrets, which were not kept; it cannot be retried."
        )
    spec = queue_spec(job["queue"])
    job_publish(
        job["task"],
        queue=spec,
        args=json.loads(job.get("args") or "[]"),
        kwargs=json.loads(job.get("kwargs") or "{}"),
        priority=int(job.get("priority") or spec.priority),
        job_id=job["id"],
    )


def job_retry(*, job_id: str, actor: Actor) -> dict[str, Any]:
    """Publish a failed job again, under the same id (its record goes on)."""
    job = _job_or_404(job_id)
    if job.get("state") != records.FAILED:
        raise JobActionRefused(
            f"Only failed jobs can be retried (this one is {job.get('state')})."
        )
    republish(job)
    queue_action_log(
        actor=actor, action=QueueAction.Action.RETRY, queue=job["queue"], job_id=job_id
    )
    return job


def job_retry_edited(
    *, job_id: str, kwargs: dict[str, Any], actor: Actor
) -> dict[str, Any]:
    """Publish a failed job again, under the same id, with corrected data (its
    keyword arguments, checked by the caller). The record keeps the data it
    first failed with and who changed it; the action log keeps both."""
    job = _job_or_404(job_id)
    if job.get("state") != records.FAILED:
        raise JobActionRefused(
            f"Only failed jobs can be retried (this one is {job.get('state')})."
        )
    spec = queue_spec(job["queue"])
    original = job.get("original_kwargs") or job.get("kwargs") or "{}"
    records.record_transition(
        job_id=job_id,
        queue=spec.name,
        state=None,
        fields={
            "original_kwargs": original,
            "edited_by": _actor_fields(actor)["actor_name"],
            "edited_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    job_publish(
        job["task"],
        queue=spec,
        args=json.loads(job.get("args") or "[]"),
        kwargs=kwargs,
        priority=int(job.get("priority") or spec.priority),
        job_id=job_id,
    )
    try:
        original_data = json.loads(original)
    except json.JSONDecodeError:
        original_data = original
    queue_action_log(
        actor=actor,
        action=QueueAction.Action.EDIT_RETRY,
        queue=spec.name,
        job_id=job_id,
        detail="retried with corrected data",
        params={"original": redact_data(original_data), "data": redact_data(kwargs)},
    )
    return job_detail(job_id) or job


def queue_retry_failed_count(*, spec: QueueSpec) -> int:
    return queue_redis().zcard(state_key(spec.name, records.FAILED))


def queue_retry_failed(*, spec: QueueSpec, actor: Actor) -> int:
    retried = 0
    for job_id in job_ids_in_state(spec.name, records.FAILED):
        job = job_detail(job_id)
        if job is None or job.get("truncated") or job.get("redacted"):
            continue
        republish(job)
        retried += 1
    queue_action_log(
        actor=actor,
        action=QueueAction.Action.RETRY_FAILED,
        queue=spec.name,
        count=retried,
    )
    return retried


def _broker_remove(queue: str, job_id: str) -> bool:
    client = queue_redis()
    for key in broker_lists(queue):
        for raw in client.lrange(key, 0, -1):
            try:
                message_id = json.loads(raw).get("headers", {}).get("id")
            except (json.JSONDecodeError, AttributeError):
                continue
            if message_id == job_id:
                return bool(client.lrem(key, 1, raw))
    return False


def job_remove(*, job_id: str, actor: Actor) -> dict[str, Any]:
    """Remove a job that is not running: from the broker if it waits, its
    delayed retry is revoked, and its record goes."""
    job = _job_or_404(job_id)
    state = job.get("state")
    if state == records.ACTIVE:
        raise JobActionRefused("The job is running; it can be removed once it ends.")
    if state == records.WAITING:
        _broker_remove(job["queue"], job_id)
    elif state == records.DELAYED:
        current_app.control.revoke(job_id)
    records.record_delete(job_id, job["queue"])
    queue_action_log(
        actor=actor,
        action=QueueAction.Action.REMOVE,
        queue=job["queue"],
        job_id=job_id,
        detail=f"was {state}",
    )
    return job


def queue_test_job_enqueue(*, spec: QueueSpec, data: dict, actor: Actor) -> str:
    """The operators' test job on ``spec`` (POST /admin/queue/test)."""
    result = job_publish(TEST_TASK, queue=spec, kwargs={"data": data})
    queue_action_log(
        actor=actor, action=QueueAction.Action.TEST, queue=spec.name, job_id=result.id
    )
    return result.id
