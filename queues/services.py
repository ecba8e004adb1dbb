"""QueueService: publishing jobs with the seed's priority scale, and the
operators' actions on queues and jobs (pause, resume, clean, retry, remove).

Every operator action is logged with who did it (a QueueAction row and a log
line). Queue names accept the full name or the alias (queues.definitions).
"""

import json
import logging
import time
import uuid
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import redis
from celery import Task
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from queues import records
from queues.bootsteps import PAUSED_KEY
from queues.definitions import (
    Priority,
    QueueSpec,
    celery_priority,
    queue_spec,
)
from queues.models import QueueAction
from queues.selectors import broker_lists, job_detail, job_ids_in_state, queue_stats
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

TEST_TASK = "queues.test_job"

CLEANABLE_STATES = (records.COMPLETED, records.FAILED)
STATUS_NAMES = ("sent", "delivered", "read", "failed")

Actor = AbstractBaseUser | str | None


class JobNotFound(LookupError):
    pass


class JobActionRefused(ValueError):
    """The job is in a state the action does not apply to."""


@contextmanager
def _forget_record_on_failure(job_id: str, queue: str | None, *, keep: bool = False):
    """The record is written just before the message is sent; if sending fails,
    the job does not exist and neither should its record (a retried job keeps
    the record it had)."""
    try:
        yield
    except Exception:
        if queue and not keep:
            try:
                records.record_delete(job_id, queue)
            except redis.RedisError:
                logger.warning("Record of unpublished job %s left behind", job_id)
        raise


def job_enqueue(
    task: Task,
    *,
    kwargs: dict[str, Any] | None = None,
    priority: int | None = None,
    queue: QueueSpec | None = None,
    on_commit: bool = False,
    **publish_options: Any,
):
    """Publish ``task`` with a priority on the seed's scale (10 = most urgent).

    With ``on_commit`` the job is published after the surrounding transaction
    commits, so a worker never races the row it was sent for.
    ``publish_options`` go to apply_async as they are (a short ``retry_policy``
    fails fast when the broker is down, for callers that keep a durable record).
    """
    options: dict[str, Any] = dict(publish_options)
    if priority is not None:
        options["priority"] = celery_priority(priority)
    if queue is not None:
        options["queue"] = queue.name

    def publish():
        job_id = str(uuid.uuid4())
        spec = queue or getattr(task, "queue_spec", None)
        with _forget_record_on_failure(job_id, spec.name if spec else None):
            return task.apply_async(kwargs=kwargs or {}, task_id=job_id, **options)

    if on_commit:
        transaction.on_commit(publish)
        return None
    return publish()


#: One quick retry (a pooled connection gone stale after a broker restart),
#: then give up: kombu's default policy would hold the caller for seconds.
FAIL_FAST_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.05,
    "interval_max": 0.05,
}


def job_enqueue_durable(task: Task, *, what: str, **options: Any) -> bool:
    """Publish a job for a row that is already durable (an inbox event, an
    e-mail log, a queued message), failing fast. A broker outage is logged,
    not raised: the row stays as it is until beat re-drives it, so the request
    that wrote it neither waits for the broker nor fails with it. True if
    published."""
    try:
        job_enqueue(task, retry=True, retry_policy=FAIL_FAST_RETRY_POLICY, **options)
    except Exception as exc:  # kombu raises several unrelated types here
        logger.warning("%s stored but not enqueued (%r); beat re-drives it", what, exc)
        return False
    return True


def job_send(
    task_name: str,
    *,
    queue: QueueSpec,
    args: list | tuple = (),
    kwargs: dict[str, Any] | None = None,
    priority: int | None = None,
    task_id: str | None = None,
    on_commit: bool = False,
):
    """Publish a task by name on ``queue`` (for tasks another app owns)."""
    from saas.celery import app

    options = {
        "queue": queue.name,
        "priority": celery_priority(queue.priority if priority is None else priority),
    }

    def publish():
        job_id = task_id or str(uuid.uuid4())
        with _forget_record_on_failure(job_id, queue.name, keep=task_id is not None):
            return app.send_task(
                task_name,
                args=list(args),
                kwargs=kwargs or {},
                task_id=job_id,
                **options,
            )

    if on_commit:
        transaction.on_commit(publish)
        return None
    return publish()


# --- the seed's producer calls ----------------------------------------------
# Each delegates to the service of the app that owns the work, so a job made
# through the seed's API is the same durable job the product makes itself.
def add_webhook_job(data: dict, priority: int = Priority.WEBHOOK):
    """addWebhookJob({salonId, payload, receivedAt}, priority): the payload is
    stored in the webhook inbox, as if Meta had posted it, and processed on
    whatsapp:webhook. Returns the inbox event."""
    from messaging.inbox import webhook_event_receive

    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise ValidationError({"payload": "Expected the webhook body, an object."})
    return webhook_event_receive(body=json.dumps(payload), priority=priority)


def add_message_status_job(data: dict):
    """addMessageStatusJob({messageId, status, timestamp}): applied on
    whatsapp:message-status at priority 8. ``messageId`` is our message id or
    its wamid; an unknown wamid needs ``salonId`` (it becomes an orphan status
    if it never appears)."""
    from messaging.models import Message
    from messaging.tasks import message_statuses_apply_task

    status = data.get("status")
    if status not in STATUS_NAMES:
        raise ValidationError({"status": f"Expected one of {', '.join(STATUS_NAMES)}."})
    reference = str(data.get("messageId") or "")
    lookup = Q(wamid=reference)
    with suppress(ValueError):
        lookup |= Q(pk=uuid.UUID(reference))
    message = Message.objects.filter(lookup).only("wamid", "salon_id").first()
    wamid = message.wamid if message else reference
    salon_id = message.salon_id if message else data.get("salonId")
    if not wamid or not salon_id:
        raise ValidationError(
            {"messageId": "No sent message with this id or wamid (give salonId)."}
        )
    when = parse_datetime(str(data.get("timestamp") or "")) or timezone.now()
    meta_status = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(when.timestamp())),
        "errors": data.get("errors") or [],
    }
    return job_enqueue(
        message_statuses_apply_task,
        kwargs={"salon_id": str(salon_id), "statuses": [meta_status]},
        priority=Priority.MESSAGE_STATUS,
    )


def add_email_job(data: dict):
    """addEmailJob({to, subject, template, data, priority}): logged and sent
    on notification:email (priority from data, default 7). Returns the log."""
    from notifications.services import email_enqueue

    return email_enqueue(
        to=str(data.get("to") or ""),
        template=str(data.get("template") or ""),
        data=data.get("data") or {},
        subject=str(data.get("subject") or ""),
        priority=int(data.get("priority") or Priority.EMAIL),
    )


def schedule_booking_reminder(data: dict, send_at: datetime):
    """scheduleBookingReminder({bookingId, reminderType, ...}, sendAt): a
    reminder row that beat dispatches when due; long delays never sit in the
    broker. Returns the row."""
    from bookings.services import reminder_schedule

    return reminder_schedule(
        booking_id=data.get("bookingId"),
        kind=data.get("reminderType"),
        due_at=send_at,
    )


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
) -> QueueAction:
    entry = QueueAction.objects.create(
        action=action,
        queue=queue,
        job_id=job_id,
        count=count,
        detail=detail[:200],
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


def queue_pause(*, spec: QueueSpec, actor: Actor) -> dict[str, Any]:
    """Every worker of the queue stops taking new jobs within a second (running
    jobs finish); the flag outlives worker restarts."""
    queue_redis().sadd(PAUSED_KEY, spec.name)
    queue_action_log(actor=actor, action=QueueAction.Action.PAUSE, queue=spec.name)
    return queue_stats(spec)


def queue_resume(*, spec: QueueSpec, actor: Actor) -> dict[str, Any]:
    queue_redis().srem(PAUSED_KEY, spec.name)
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
        pipe.delete(*(records.job_key(i) for i in chunk))
        pipe.delete(*(records.log_key(i) for i in chunk))
        pipe.zrem(records.state_key(spec.name, status), *chunk)
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


def _republish(job: dict[str, Any]) -> None:
    if job.get("truncated"):
        raise JobActionRefused(
            "This job's data was too large to keep in full; it cannot be retried."
        )
    if job.get("redacted"):
        raise JobActionRefused(
            "This job's data held secrets, which were not kept; it cannot be retried."
        )
    spec = queue_spec(job["queue"])
    job_send(
        job["task"],
        queue=spec,
        args=json.loads(job.get("args") or "[]"),
        kwargs=json.loads(job.get("kwargs") or "{}"),
        priority=int(job.get("priority") or spec.priority),
        task_id=job["id"],
    )


def job_retry(*, job_id: str, actor: Actor) -> dict[str, Any]:
    """Publish a failed job again, under the same id (its record goes on)."""
    job = _job_or_404(job_id)
    if job.get("state") != records.FAILED:
        raise JobActionRefused(
            f"Only failed jobs can be retried (this one is {job.get('state')})."
        )
    _republish(job)
    queue_action_log(
        actor=actor, action=QueueAction.Action.RETRY, queue=job["queue"], job_id=job_id
    )
    return job


def queue_retry_failed_count(*, spec: QueueSpec) -> int:
    return queue_redis().zcard(records.state_key(spec.name, records.FAILED))


def queue_retry_failed(*, spec: QueueSpec, actor: Actor) -> int:
    retried = 0
    for job_id in job_ids_in_state(spec.name, records.FAILED):
        job = job_detail(job_id)
        if job is None or job.get("truncated") or job.get("redacted"):
            continue
        _republish(job)
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
        from saas.celery import app

        app.control.revoke(job_id)
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
    result = job_send(TEST_TASK, queue=spec, kwargs={"data": data})
    queue_action_log(
        actor=actor, action=QueueAction.Action.TEST, queue=spec.name, job_id=result.id
    )
    return result.id


class QueueService:
    """The seed's QueueService, by its method names."""

    add_webhook_job = staticmethod(add_webhook_job)
    add_message_status_job = staticmethod(add_message_status_job)
    schedule_booking_reminder = staticmethod(schedule_booking_reminder)
    add_email_job = staticmethod(add_email_job)

    @staticmethod
    def get_queue_stats(name: str) -> dict[str, Any]:
        return queue_stats(queue_spec(name))

    @staticmethod
    def pause_queue(name: str, actor: Actor = None) -> dict[str, Any]:
        return queue_pause(spec=queue_spec(name), actor=actor)

    @staticmethod
    def resume_queue(name: str, actor: Actor = None) -> dict[str, Any]:
        return queue_resume(spec=queue_spec(name), actor=actor)

    @staticmethod
    def clean_queue(name: str, grace_ms: int, status: str, actor: Actor = None) -> int:
        return queue_clean(
            spec=queue_spec(name), grace_ms=grace_ms, status=status, actor=actor
        )

    @staticmethod
    def retry_job(job_id: str, actor: Actor = None) -> dict[str, Any]:
        return job_retry(job_id=job_id, actor=actor)

    @staticmethod
    def retry_failed(name: str, actor: Actor = None) -> int:
        return queue_retry_failed(spec=queue_spec(name), actor=actor)

    @staticmethod
    def remove_job(job_id: str, actor: Actor = None) -> dict[str, Any]:
        return job_remove(job_id=job_id, actor=actor)
