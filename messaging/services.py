"""Writes for templates, conversations and delivery statuses.

Outbound messages are messaging/outbound.py; the webhook inbox is
messaging/inbox.py."""

import logging
from datetime import datetime
from typing import Any

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
from messaging.send_errors import send_error_annotate
from messaging.signals import messages_changed
from saas.services import model_save_validated

logger = logging.getLogger(__name__)

#: The job of whatsapp:message-status (messaging/tasks.py), published by name.
MESSAGE_STATUSES_APPLY_TASK = "messaging.message_statuses_apply"

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
    return send_error_annotate(error)


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


def orphan_statuses_adopt(message: Message) -> None:
    orphans = list(OrphanStatus.objects.filter(wamid=message.wamid))
    for orphan in orphans:
        _status_apply(message.pk, orphan.payload)
    if orphans:
        OrphanStatus.objects.filter(pk__in=[o.pk for o in orphans]).delete()
