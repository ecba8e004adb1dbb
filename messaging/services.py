"""Writes for conversations, messages, templates and WhatsApp webhooks."""

import json
import logging
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from bookings.models import Salon
from messaging.models import (
    Conversation,
    Message,
    MessageTemplate,
    OrphanStatus,
    WebhookEvent,
)
from messaging.signals import messages_changed
from messaging.whatsapp import SendResult, WhatsAppError, whatsapp_client
from queues.definitions import OUTBOUND, Priority, RetryableJobError
from queues.services import job_enqueue
from saas.services import model_save_validated

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


def conversation_for_customer(
    *, salon: Salon, wa_id: str, name: str = "", user_id: str = ""
) -> Conversation:
    """The salon's conversation with this customer, created on first contact.

    Safe under concurrency: the (salon, customer_wa_id) unique constraint
    decides, not a check-then-insert.
    """
    defaults = {"customer_name": name, "customer_user_id": user_id}
    conversation, created = Conversation.objects.get_or_create(
        salon=salon, customer_wa_id=wa_id, defaults=defaults
    )
    changed = {
        field: value
        for field, value in defaults.items()
        if value and getattr(conversation, field) != value
    }
    if not created and changed:
        Conversation.objects.filter(pk=conversation.pk).update(**changed)
        for field, value in changed.items():
            setattr(conversation, field, value)
    return conversation


# --- WhatsApp webhooks: the inbox ---------------------------------------------

#: Statuses applied per message-status job: a 10,000-status body becomes 100
#: small jobs, never one huge one.
STATUS_BATCH_SIZE = 100


#: One quick retry (a pooled connection gone stale after a broker restart), then
#: give up: kombu's default policy would hold the webhook's answer for seconds.
WEBHOOK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.05,
    "interval_max": 0.05,
}


def _webhook_event_enqueue(event_id: int, priority: int = Priority.WEBHOOK) -> None:
    """Publish the event's job. A broker outage is logged, not raised: the event
    is durable and stays pending until beat re-drives it."""
    from messaging.tasks import webhook_event_process_task

    try:
        job_enqueue(
            webhook_event_process_task,
            kwargs={"event_id": event_id},
            priority=priority,
            retry=True,
            retry_policy=WEBHOOK_PUBLISH_RETRY_POLICY,
        )
    except Exception as exc:  # kombu raises several unrelated types here
        logger.warning(
            "Webhook event %s stored but not enqueued (%r); beat re-drives it",
            event_id,
            exc,
        )


def webhook_event_receive(
    *, body: str, priority: int = Priority.WEBHOOK
) -> WebhookEvent:
    """Store a verified webhook body and enqueue it after commit.

    Not wrapped in atomic on purpose: one INSERT commits by itself, and the
    BEGIN/COMMIT round trips would sit on the webhook's answer time.
    """
    event = WebhookEvent.objects.create(received_at=timezone.now(), body=body)
    transaction.on_commit(lambda: _webhook_event_enqueue(event.pk, priority))
    return event


def webhook_events_redrive(*, older_than: timedelta, limit: int = 1000) -> list[int]:
    """Enqueue again the pending events older than ``older_than`` that were not
    re-driven within that time (their enqueue failed, or their job died)."""
    now = timezone.now()
    cutoff = now - older_than
    with transaction.atomic():
        ids = list(
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(status=WebhookEvent.Status.PENDING, received_at__lt=cutoff)
            .filter(Q(redriven_at__isnull=True) | Q(redriven_at__lt=cutoff))
            .order_by("received_at")
            .values_list("pk", flat=True)[:limit]
        )
        WebhookEvent.objects.filter(pk__in=ids).update(redriven_at=now)
    for event_id in ids:
        _webhook_event_enqueue(event_id)
    if ids:
        logger.warning("Re-drove %d pending webhook events", len(ids))
    return ids


def webhook_event_process(*, event_id: int) -> WebhookEvent | None:
    """Turn one stored webhook into conversations and messages; fan its
    statuses out. Idempotent: a processed event is left alone, and a message
    already stored (Meta's duplicate deliveries) is not stored twice.

    A database or broker error leaves the event pending and raises
    RetryableJobError; any other error (a bug) marks it failed with the
    error, its body kept for a replay.
    """
    try:
        with transaction.atomic():
            event = (
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(pk=event_id, status=WebhookEvent.Status.PENDING)
                .first()
            )
            if event is None:
                if WebhookEvent.objects.filter(
                    pk=event_id, status=WebhookEvent.Status.PENDING
                ).exists():
                    # Another job holds it; if that one dies or rolls back,
                    # nobody else would come back for it before the re-drive.
                    raise RetryableJobError(f"webhook event {event_id} is busy")
                return None  # done already
            outcome = _webhook_payload_apply(json.loads(event.body))
            event.status = (
                WebhookEvent.Status.IGNORED
                if outcome.ignored_only
                else WebhookEvent.Status.PROCESSED
            )
            event.attempts += 1
            event.last_error = "; ".join(outcome.notes)[:4000]
            event.processed_at = timezone.now()
            event.save(
                update_fields=["status", "attempts", "last_error", "processed_at"]
            )
            # Published before commit on purpose: a crash between commit and
            # publish would lose them, while publishing twice (this job rolled
            # back and ran again) is harmless, as statuses apply idempotently.
            for salon_id, statuses in outcome.statuses.items():
                _message_statuses_enqueue(salon_id, statuses)
            return event
    except RetryableJobError:
        raise
    except (OperationalError, InterfaceError, BrokerError) as exc:
        # The database or the broker (fanning statuses out) is away: the
        # transaction rolled back, so the event is still pending; retry.
        raise RetryableJobError(f"webhook event {event_id}: {exc!r}") from exc
    except Exception as exc:
        logger.exception("Webhook event %s failed", event_id)
        WebhookEvent.objects.filter(
            pk=event_id, status=WebhookEvent.Status.PENDING
        ).update(
            status=WebhookEvent.Status.FAILED,
            attempts=F("attempts") + 1,
            last_error=repr(exc)[:4000],
        )
        raise


def _message_statuses_enqueue(salon_id: str, statuses: list[dict]) -> None:
    from messaging.tasks import message_statuses_apply_task

    for start in range(0, len(statuses), STATUS_BATCH_SIZE):
        job_enqueue(
            message_statuses_apply_task,
            kwargs={
                "salon_id": salon_id,
                "statuses": statuses[start : start + STATUS_BATCH_SIZE],
            },
            priority=Priority.MESSAGE_STATUS,
        )


@dataclass
class _PayloadOutcome:
    notes: list[str] = dataclass_field(default_factory=list)
    statuses: dict[str, list[dict]] = dataclass_field(default_factory=dict)
    values: int = 0
    ignored_values: int = 0

    @property
    def ignored_only(self) -> bool:
        return self.values > 0 and self.ignored_values == self.values


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _meta_time(value: Any) -> datetime | None:
    """Meta's unix-seconds strings as aware datetimes; None if unreadable."""
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _webhook_payload_apply(payload: Any) -> _PayloadOutcome:
    """Walk every entry, change, message and status (Meta batches at every
    level)."""
    outcome = _PayloadOutcome()
    salons: dict[str, Salon | None] = {}
    for entry in _as_list(_as_dict(payload).get("entry")):
        for change in _as_list(_as_dict(entry).get("changes")):
            change = _as_dict(change)
            if change.get("field", "messages") != "messages":
                outcome.notes.append(f"skipped field {change.get('field')!r}")
                continue
            value = _as_dict(change.get("value"))
            outcome.values += 1
            phone_number_id = str(
                _as_dict(value.get("metadata")).get("phone_number_id") or ""
            )
            if phone_number_id not in salons:
                salons[phone_number_id] = Salon.objects.filter(
                    whatsapp_phone_number_id=phone_number_id
                ).first()
            salon = salons[phone_number_id]
            if salon is None:
                outcome.ignored_values += 1
                outcome.notes.append(f"unknown phone_number_id {phone_number_id!r}")
                logger.warning(
                    "Webhook for unknown phone_number_id %r ignored", phone_number_id
                )
                continue
            for error in _as_list(value.get("errors")):
                error = _as_dict(error)
                outcome.notes.append(f"value error {error.get('code')}")
                logger.warning(
                    "WhatsApp reported an error for salon %s: %s %s (%s)",
                    salon.pk,
                    error.get("code"),
                    error.get("title"),
                    _as_dict(error.get("error_data")).get("details", ""),
                )
            _inbound_messages_store(salon, value, outcome)
            statuses = [
                status
                for status in _as_list(value.get("statuses"))
                if _status_is_readable(status, outcome)
            ]
            if statuses:
                outcome.statuses.setdefault(str(salon.pk), []).extend(statuses)
    if outcome.values == 0:
        outcome.notes.append("no entry[].changes[] in the body")
    return outcome


def _status_is_readable(status: Any, outcome: _PayloadOutcome) -> bool:
    status = _as_dict(status)
    if status.get("id") and status.get("status") in STATUS_FIELDS:
        return True
    outcome.notes.append(
        f"skipped status {status.get('status')!r} for {status.get('id')!r}"
    )
    return False


MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")


def _message_error(message: dict) -> dict | None:
    errors = _as_list(message.get("errors"))
    if not errors:
        return None
    error = _as_dict(errors[0])
    return {
        "code": error.get("code"),
        "title": error.get("title") or error.get("message", ""),
        "details": _as_dict(error.get("error_data")).get("details", ""),
    }


def _inbound_content(message: dict) -> tuple[str, dict]:
    """What a person needs to see: (body, content) for each message type."""
    kind = message.get("type") or "unknown"
    data = _as_dict(message.get(kind))
    if kind == "text":
        return str(data.get("body", "")), {}
    if kind in MEDIA_TYPES:
        keys = ("id", "mime_type", "sha256", "caption", "filename", "voice", "animated")
        content = {key: data[key] for key in keys if key in data}
        return str(data.get("caption") or data.get("filename") or ""), content
    if kind == "location":
        keys = ("latitude", "longitude", "name", "address", "url")
        content = {key: data[key] for key in keys if key in data}
        body = ", ".join(str(data[k]) for k in ("name", "address") if data.get(k))
        return body, content
    if kind == "interactive":
        reply_type = data.get("type", "")
        reply = _as_dict(data.get(reply_type))
        content = {"interactive_type": reply_type, **reply}
        return str(reply.get("title", "")), content
    if kind == "button":
        return str(data.get("text", "")), {
            "payload": data.get("payload", ""),
            "text": data.get("text", ""),
        }
    if kind == "reaction":
        emoji = data.get("emoji") or ""
        return emoji, {
            "message_id": data.get("message_id", ""),
            "emoji": emoji,
            "removed": not emoji,
        }
    if kind == "contacts":
        contacts = _as_list(message.get("contacts"))
        names = [
            _as_dict(_as_dict(c).get("name")).get("formatted_name", "")
            for c in contacts
        ]
        return ", ".join(n for n in names if n), {"contacts": contacts}
    # unsupported, order, system and types Meta adds later: keep what came.
    return "", dict(data)


def _inbound_messages_store(salon: Salon, value: dict, outcome: _PayloadOutcome):
    contacts = {
        str(_as_dict(c).get("wa_id")): _as_dict(c)
        for c in _as_list(value.get("contacts"))
    }
    rows: list[Message] = []
    conversations: dict[str, Conversation] = {}
    latest: dict[str, datetime] = {}
    referenced: set[str] = set()
    now = timezone.now()
    for message in _as_list(value.get("messages")):
        message = _as_dict(message)
        wamid, sender = message.get("id"), message.get("from")
        if not wamid or not sender:
            outcome.notes.append("skipped a message without id or from")
            continue
        sender = str(sender)
        if sender not in conversations:
            contact = contacts.get(sender, {})
            conversations[sender] = conversation_for_customer(
                salon=salon,
                wa_id=sender,
                name=str(_as_dict(contact.get("profile")).get("name") or ""),
                user_id=str(contact.get("user_id") or ""),
            )
        body, content = _inbound_content(message)
        context = _as_dict(message.get("context"))
        if context:
            content["context"] = context
            referenced.add(str(context.get("id") or ""))
        if message.get("type") == "reaction":
            referenced.add(content["message_id"])
        created_at = _meta_time(message.get("timestamp")) or now
        conversation = conversations[sender]
        latest[sender] = max(latest.get(sender, created_at), created_at)
        rows.append(
            Message(
                salon=salon,
                conversation=conversation,
                wamid=str(wamid),
                direction=Message.Direction.INBOUND,
                type=str(message.get("type") or "unknown")[:32],
                body=body,
                content=content,
                status=Message.Status.RECEIVED,
                error=_message_error(message),
                created_at=created_at,
            )
        )
    if not rows:
        return
    referenced.discard("")
    known = (
        dict(
            Message.objects.filter(salon=salon, wamid__in=referenced).values_list(
                "wamid", "pk"
            )
        )
        if referenced
        else {}
    )
    for row in rows:
        row.reply_to_id = known.get(row.content.get("context", {}).get("id"))
        if row.type == "reaction":
            row.reaction_to_id = known.get(row.content.get("message_id"))
    # ON CONFLICT DO NOTHING on the wamid unique constraint: a duplicate
    # delivery stores nothing, whatever else runs at the same time.
    Message.objects.bulk_create(rows, ignore_conflicts=True)
    for sender, at in latest.items():
        _conversation_touch(conversations[sender].pk, at=at, inbound=True)
    _messages_changed_on_commit(salon.pk, [c.pk for c in conversations.values()])


def _conversation_touch(conversation_id, *, at: datetime, inbound: bool) -> None:
    """last_message_at (and last_inbound_at) move forward, never back."""
    updates = {
        "last_message_at": Greatest(Coalesce("last_message_at", Value(at)), Value(at))
    }
    if inbound:
        updates["last_inbound_at"] = Greatest(
            Coalesce("last_inbound_at", Value(at)), Value(at)
        )
    Conversation.objects.filter(pk=conversation_id).update(**updates)


def _messages_changed_on_commit(salon_id, conversation_ids) -> None:
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
    error = _message_error(status) or {"code": None, "title": "failed", "details": ""}
    return error


def _status_apply(message_id, status: dict) -> None:
    name = status["status"]
    field_name, replaces = STATUS_FIELDS[name]
    at = _meta_time(status.get("timestamp")) or timezone.now()
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
        _messages_changed_on_commit(salon_id, [c for _, c in known.values()])
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
                timestamp=_meta_time(s.get("timestamp")),
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
    from messaging.tasks import message_outbound_send_task

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
    _conversation_touch(conversation.pk, at=now, inbound=False)
    _messages_changed_on_commit(conversation.salon_id, [conversation.pk])
    job_enqueue(
        message_outbound_send_task,
        kwargs={"message_id": str(message.pk)},
        priority=OUTBOUND.priority,
        on_commit=True,
    )
    return message


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
        _messages_changed_on_commit(message.salon_id, [message.conversation_id])
    message.refresh_from_db()
    return message


@transaction.atomic
def _message_fail(message: Message, error: dict) -> Message:
    logger.warning("Outbound message %s failed: %s", message.pk, error)
    Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
        status=Message.Status.FAILED, error=error, failed_at=timezone.now()
    )
    _messages_changed_on_commit(message.salon_id, [message.conversation_id])
    message.refresh_from_db()
    return message
