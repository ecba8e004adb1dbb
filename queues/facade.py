"""The seed's QueueService, by its method names: its producer calls and its
queue operations, each delegating to the app that owns the work. A job made
through the seed's API is the same durable job the product makes itself.

Top layer: it imports the domain apps (bookings, messaging, notifications)
and the queues' services; nothing below imports it.
"""

import json
import uuid
from contextlib import suppress
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from bookings.reminder_sending import REMINDER_TEST_SEND_TASK
from bookings.reminders import reminder_schedule
from messaging.inbox import webhook_event_receive
from messaging.media import MESSAGE_MEDIA_DOWNLOAD_TASK
from messaging.models import Message
from messaging.outbound import MESSAGE_TEST_SEND_TASK
from messaging.services import MESSAGE_STATUSES_APPLY_TASK
from notifications.services import email_enqueue
from queues.definitions import (
    EMAIL,
    MEDIA,
    MESSAGE_STATUS,
    OUTBOUND,
    REMINDER,
    WEBHOOK,
    Priority,
    QueueSpec,
    queue_spec,
)
from queues.models import QueueAction
from queues.publish import job_publish
from queues.selectors import queue_stats
from queues.services import (
    Actor,
    job_remove,
    job_retry,
    queue_action_log,
    queue_clean,
    queue_pause,
    queue_resume,
    queue_retry_failed,
)

STATUS_NAMES = ("sent", "delivered", "read", "failed")


def add_webhook_job(data: dict, priority: int = Priority.WEBHOOK):
    """addWebhookJob({salonId, payload, receivedAt}, priority): the payload is
    stored in the webhook inbox, as if Meta had posted it, and processed on
    whatsapp:webhook. Returns the inbox event."""
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise ValidationError({"payload": "Expected the webhook body, an object."})
    return webhook_event_receive(body=json.dumps(payload), priority=priority)


def add_message_status_job(data: dict):
    """addMessageStatusJob({messageId, status, timestamp}): applied on
    whatsapp:message-status at priority 8. ``messageId`` is our message id or
    its wamid; an unknown wamid needs ``salonId`` (it becomes an orphan status
    if it never appears)."""
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
    return job_publish(
        MESSAGE_STATUSES_APPLY_TASK,
        queue=MESSAGE_STATUS,
        kwargs={"salon_id": str(salon_id), "statuses": [meta_status]},
    )


def add_email_job(data: dict):
    """addEmailJob({to, subject, template, data, priority}): logged and sent
    on notification:email (priority from data, default 7). Returns the log."""
    return add_email_job_with_id(data)


def schedule_booking_reminder(data: dict, send_at: datetime):
    """scheduleBookingReminder({bookingId, reminderType, ...}, sendAt): a
    reminder row that beat dispatches when due; long delays never sit in the
    broker. Returns the row."""
    return reminder_schedule(
        booking_id=data.get("bookingId"),
        kind=data.get("reminderType"),
        due_at=send_at,
    )


REMINDER_TEST_PARAMETERS = ["Test", "Test service", "now"]


def queue_test_job_run(*, spec: QueueSpec, data: dict, actor: Actor) -> dict[str, Any]:
    """POST /admin/queue/test: a job that does the queue's real work with the
    seed's data shapes (validated by the API per queue). Returns what to
    follow: the job id when the job is ours to name, the row it works on."""
    job_id = str(uuid.uuid4())
    answer: dict[str, Any] = {"jobId": job_id, "queue": spec.name}
    if spec is EMAIL:
        log = add_email_job_with_id(data, job_id)
        answer["emailLogId"] = str(log.pk)
    elif spec is WEBHOOK:
        # Stored in the inbox as if Meta had posted it; the drain takes it.
        event = webhook_event_receive(body=json.dumps(data["payload"]))
        answer.update(jobId=None, eventId=event.pk)
    elif spec is MESSAGE_STATUS:
        answer["jobId"] = add_message_status_job(data).id
    elif spec is REMINDER:
        job_publish(
            REMINDER_TEST_SEND_TASK,
            queue=REMINDER,
            kwargs={
                "salon_id": str(data["salonId"]),
                "to": data["to"],
                "parameters": data.get("parameters") or REMINDER_TEST_PARAMETERS,
            },
            job_id=job_id,
        )
    elif spec is OUTBOUND:
        job_publish(
            MESSAGE_TEST_SEND_TASK,
            queue=OUTBOUND,
            kwargs={
                "salon_id": str(data["salonId"]),
                "to": data["to"],
                "text": data["text"],
            },
            job_id=job_id,
        )
    elif spec is MEDIA:
        # Downloads the media of an inbound message still pending (one done
        # already is left as it is: the job is idempotent).
        job_publish(
            MESSAGE_MEDIA_DOWNLOAD_TASK,
            queue=MEDIA,
            kwargs={"message_id": str(data["messageId"])},
            job_id=job_id,
        )
    else:
        raise ValidationError({"queueName": f"No test job for {spec.name} yet."})
    queue_action_log(
        actor=actor,
        action=QueueAction.Action.TEST,
        queue=spec.name,
        job_id=answer["jobId"] or "",
        detail="real work",
    )
    return answer


def add_email_job_with_id(data: dict, job_id: str | None = None):
    return email_enqueue(
        to=str(data.get("to") or ""),
        template=str(data.get("template") or ""),
        data=data.get("data") or {},
        subject=str(data.get("subject") or ""),
        priority=int(data.get("priority") or Priority.EMAIL),
        job_id=job_id,
    )


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
