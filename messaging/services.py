"""Writes for templates, conversations, delivery statuses and outbound messages.

The webhook inbox is in messaging/inbox.py."""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from bookings.models import Salon
from messaging.models import (
    Conversation,
    Message,
    MessageTemplate,
    OrphanStatus,
)
from messaging.payloads import message_error, meta_time
from messaging.signals import messages_changed
from messaging.whatsapp import SendResult, WhatsAppError, whatsapp_client
from queues.definitions import OUTBOUND, RetryableJobError
from queues.services import job_enqueue_durable
from saas.services import model_save_validated, rows_claim_for_redrive

logger = logging.getLogger(__name__)

TEMPLATE_EDITABLE_FIELDS = ("name", "language", "category", "body", "status")
_DUPLICATE_TEMPLATE = {"name": "This salon has a template with this name and language."}


@transaction.atomic
def template_create(
    *,
    salon: Salon,
    name: str,
    category: str,
    body: str,
    language: str = "en_US",
    status: str = MessageTemplate.Status.PENDING,
) -> MessageTemplate:
    template = MessageTemplate(
        salon=salon,
        name=name,
        language=language,
        category=category,
        body=body,
        status=status,
    )
    return model_save_validated(template, integrity_errors=_DUPLICATE_TEMPLATE)


@transaction.atomic
def template_update(
    *, template: MessageTemplate, data: dict[str, Any]
) -> MessageTemplate:
    for field in TEMPLATE_EDITABLE_FIELDS:
        if field in data:
            setattr(template, field, data[field])
    return model_save_validated(template, integrity_errors=_DUPLICATE_TEMPLATE)


@transaction.atomic
def template_delete(*, template: MessageTemplate) -> None:
    template.delete()


def wa_id_from_phone(phone: str) -> str:
    """WhatsApp ids are E.164 numbers without the plus sign."""
    return phone.lstrip("+")


#: PostgreSQL: every conversation's time in one statement whose text does not
#: depend on how many there are (two array parameters).
_TOUCH_SQL = """
UPDATE messaging_conversation AS c
SET last_message_at = GREATEST(COALESCE(c.last_message_at, v.at), v.at){inbound}
FROM unnest(%s::uuid[], %s::timestamptz[]) AS v(id, at)
WHERE c.id = v.id
"""
_TOUCH_INBOUND = (
    ",\n    last_inbound_at = GREATEST(COALESCE(c.last_inbound_at, v.at), v.at)"
)


def conversations_touch(latest: dict[Any, datetime], *, inbound: bool) -> None:
    """last_message_at (and last_inbound_at) move forward, never back, for the
    conversations in ``latest`` (id -> time)."""
    if not latest:
        return
    if connection.vendor == "postgresql":
        sql = _TOUCH_SQL.format(inbound=_TOUCH_INBOUND if inbound else "")
        with connection.cursor() as cursor:
            cursor.execute(sql, [list(latest), list(latest.values())])
        return
    for pk, at in latest.items():  # SQLite, in development
        updates = {
            "last_message_at": Greatest(
                Coalesce("last_message_at", Value(at)), Value(at)
            )
        }
        if inbound:
            updates["last_inbound_at"] = Greatest(
                Coalesce("last_inbound_at", Value(at)), Value(at)
            )
        Conversation.objects.filter(pk=pk).update(**updates)


def messages_changed_on_commit(salon_id, conversation_ids) -> None:
    conversation_ids = list(dict.fromkeys(conversation_ids))
    transaction.on_commit(
        lambda: messages_changed.send(
            sender=Message, salon_id=salon_id, conversation_ids=conversation_ids
        )
    )


# --- Delivery statuses --------------------------------------------------------

#: status -> (its timestamp field, the statuses it may replace). sent < delivered
#: < read; failed only while not delivered or read; a delivery proves a
#: failure report wrong.
STATUS_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sent": ("sent_at", (Message.Status.QUEUED,)),
    "delivered": (
        "delivered_at",
        (Message.Status.QUEUED, Message.Status.SENT, Message.Status.FAILED),
    ),
    "read": (
        "read_at",
        (
            Message.Status.QUEUED,
            Message.Status.SENT,
            Message.Status.DELIVERED,
            Message.Status.FAILED,
        ),
    ),
    "failed": ("failed_at", (Message.Status.QUEUED, Message.Status.SENT)),
}


def _status_error(status: dict) -> dict:
    error = message_error(status) or {"code": None, "title": "failed", "details": ""}
    return error


def _status_apply(message_id, status: dict) -> None:
    name = status["status"]
    field_name, replaces = STATUS_FIELDS[name]
    at = meta_time(status.get("timestamp")) or timezone.now()
    # Each status keeps its own timestamp, whatever order it arrives in.
    Message.objects.filter(pk=message_id).update(
        **{field_name: Coalesce(field_name, Value(at))}
    )
    # Monotonic and race-safe: the WHERE decides under the row lock.
    changes: dict[str, Any] = {"status": name}
    if name == "failed":
        changes["error"] = _status_error(status)
    Message.objects.filter(pk=message_id, status__in=replaces).update(**changes)


@transaction.atomic
def message_statuses_apply(*, salon_id, statuses: list[dict]) -> list[dict]:
    """Apply delivery statuses to the salon's messages, in any order, any number
    of times. Returns the statuses whose wamid is not stored (yet)."""
    wamids = {str(s["id"]) for s in statuses}
    known = {
        wamid: (pk, conversation_id)
        for wamid, pk, conversation_id in Message.objects.filter(
            salon_id=salon_id, wamid__in=wamids
        ).values_list("wamid", "pk", "conversation_id")
    }
    missing = []
    for status in statuses:
        found = known.get(str(status["id"]))
        if found is None:
            missing.append(status)
        else:
            _status_apply(found[0], status)
    if known:
        messages_changed_on_commit(salon_id, [c for _, c in known.values()])
    return missing


@transaction.atomic
def orphan_statuses_store(*, salon_id, statuses: list[dict]) -> None:
    """Keep statuses for wamids we never stored; they are applied if the
    message is stored later, and never invent a message."""
    OrphanStatus.objects.bulk_create(
        [
            OrphanStatus(
                salon_id=salon_id,
                wamid=str(s["id"]),
                status=s["status"],
                timestamp=meta_time(s.get("timestamp")),
                payload=s,
            )
            for s in statuses
        ],
        ignore_conflicts=True,
    )
    logger.warning(
        "Kept %d statuses for unknown wamids of salon %s as orphans",
        len(statuses),
        salon_id,
    )


def _orphan_statuses_adopt(message: Message) -> None:
    orphans = list(OrphanStatus.objects.filter(wamid=message.wamid))
    for orphan in orphans:
        _status_apply(message.pk, orphan.payload)
    if orphans:
        OrphanStatus.objects.filter(pk__in=[o.pk for o in orphans]).delete()


# --- Outbound -----------------------------------------------------------------

CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
WINDOW_CLOSED = (
    "The customer has not written in the last 24 hours, so WhatsApp only "
    "accepts an approved template message now: use a template."
)


@transaction.atomic
def message_send_text(*, conversation: Conversation, text: str) -> Message:
    """Queue a staff member's free-text reply; sent on whatsapp:outbound."""
    text = text.strip()
    if not text:
        raise ValidationError({"text": "The message is empty."})
    now = timezone.now()
    window_opened = conversation.last_inbound_at
    if window_opened is None or window_opened < now - CUSTOMER_SERVICE_WINDOW:
        raise ValidationError({"text": WINDOW_CLOSED})
    message = Message.objects.create(
        salon_id=conversation.salon_id,
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        type="text",
        body=text,
        status=Message.Status.QUEUED,
        created_at=now,
    )
    conversations_touch({conversation.pk: now}, inbound=False)
    messages_changed_on_commit(conversation.salon_id, [conversation.pk])
    transaction.on_commit(lambda: _outbound_publish(message.pk))
    return message


def _outbound_publish(message_id) -> None:
    """Publish the message's send job; in a broker outage the message stays
    queued until beat re-drives it."""
    from messaging.tasks import message_outbound_send_task

    job_enqueue_durable(
        message_outbound_send_task,
        what=f"Outbound message {message_id}",
        kwargs={"message_id": str(message_id)},
        priority=OUTBOUND.priority,
    )


def messages_outbound_redrive(*, older_than: timedelta, limit: int = 500) -> list:
    """Enqueue again the outbound messages still queued ``older_than`` after
    they were written and not re-driven within that time (their enqueue
    failed, or their job was lost). A job that was only late finds its
    message sent and does nothing; one still waiting in a backlog longer than
    ``older_than`` can send twice, which is why the threshold is minutes."""
    ids = [
        message.pk
        for message in rows_claim_for_redrive(
            Message.objects.filter(
                direction=Message.Direction.OUTBOUND,
                status=Message.Status.QUEUED,
                wamid__isnull=True,
            ).only("pk"),
            stale_field="created_at",
            older_than=older_than,
            order_by="created_at",
            limit=limit,
        )
    ]
    for message_id in ids:
        _outbound_publish(message_id)
    if ids:
        logger.warning("Re-drove %d queued outbound messages", len(ids))
    return ids


def _outbound_send(message: Message) -> SendResult:
    client = whatsapp_client()
    phone_number_id = message.salon.whatsapp_phone_number_id
    to = message.conversation.customer_wa_id
    if message.type == "template":
        return client.send_template(
            phone_number_id=phone_number_id,
            to=to,
            name=message.content["name"],
            language=message.content.get("language", message.salon.language),
            parameters=message.content.get("parameters", []),
        )
    reply_to = message.reply_to.wamid if message.reply_to else ""
    return client.send_text(
        phone_number_id=phone_number_id,
        to=to,
        body=message.body,
        reply_to_wamid=reply_to or "",
    )


def message_outbound_deliver(*, message_id, final_attempt: bool) -> Message | None:
    """Send a queued outbound message through the WhatsApp client.

    Retryable errors (by Meta's code) raise RetryableJobError until the last
    attempt; permanent ones, and the last attempt's, fail the message with
    the error.
    """
    message = (
        Message.objects.select_related("salon", "conversation", "reply_to")
        .filter(pk=message_id)
        .first()
    )
    if message is None:
        logger.warning("Outbound message %s is gone; nothing to send", message_id)
        return None
    if message.status != Message.Status.QUEUED or message.wamid:
        return message  # sent already (a redelivered job)
    try:
        result = _outbound_send(message)
    except WhatsAppError as exc:
        if exc.retryable and not final_attempt:
            raise RetryableJobError(f"message {message_id}: {exc}") from exc
        return _message_fail(message, exc.as_dict())
    with transaction.atomic():
        Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
            wamid=result.wamid, status=Message.Status.SENT
        )
        message.refresh_from_db()
        _orphan_statuses_adopt(message)
        messages_changed_on_commit(message.salon_id, [message.conversation_id])
    message.refresh_from_db()
    return message


@transaction.atomic
def _message_fail(message: Message, error: dict) -> Message:
    logger.warning("Outbound message %s failed: %s", message.pk, error)
    Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
        status=Message.Status.FAILED, error=error, failed_at=timezone.now()
    )
    messages_changed_on_commit(message.salon_id, [message.conversation_id])
    message.refresh_from_db()
    return message
