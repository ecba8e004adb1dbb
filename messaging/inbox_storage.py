"""Storing inbound messages in bulk: the messages of one or many webhook
bodies, their conversations and the replies and reactions they link, with a
constant number of queries whatever their count."""

from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any

from django.db.models import Q
from django.utils import timezone

from bookings.models import Salon
from messaging.models import Conversation, Message
from messaging.payloads import (
    as_dict,
    as_list,
    inbound_content,
    message_error,
    meta_time,
)
from messaging.services import conversations_touch, messages_changed_on_commit

#: (salon id, customer wa_id): a conversation's natural key.
CustomerKey = tuple[Any, str]


@dataclass
class Inbound:
    """Inbound messages of one or many bodies, stored with a constant number of
    queries whatever their count."""

    #: customer -> {"customer_name": ..., "customer_user_id": ...}; a later
    #: body's non-empty values win, as if the bodies were applied in turn.
    customers: dict[CustomerKey, dict[str, str]] = dataclass_field(default_factory=dict)
    messages: list[tuple[CustomerKey, Message]] = dataclass_field(default_factory=list)

    def merge(self, other: "Inbound") -> None:
        for key, profile in other.customers.items():
            known = self.customers.setdefault(key, {})
            known.update({field: value for field, value in profile.items() if value})
        self.messages.extend(other.messages)

    def add_value(self, salon: Salon, value: dict, notes: list[str]) -> None:
        contacts = {
            str(as_dict(c).get("wa_id")): as_dict(c)
            for c in as_list(value.get("contacts"))
        }
        now = timezone.now()
        for message in as_list(value.get("messages")):
            message = as_dict(message)
            wamid, sender = message.get("id"), message.get("from")
            if not wamid or not sender:
                notes.append("skipped a message without id or from")
                continue
            key = (salon.pk, str(sender))
            contact = contacts.get(key[1], {})
            profile = self.customers.setdefault(key, {})
            name = str(as_dict(contact.get("profile")).get("name") or "")
            user_id = str(contact.get("user_id") or "")
            profile.update(
                {
                    field: value
                    for field, value in (
                        ("customer_name", name),
                        ("customer_user_id", user_id),
                    )
                    if value or field not in profile
                }
            )
            body, content = inbound_content(message)
            context = as_dict(message.get("context"))
            if context:
                content["context"] = context
            self.messages.append(
                (
                    key,
                    Message(
                        salon=salon,
                        wamid=str(wamid),
                        direction=Message.Direction.INBOUND,
                        type=str(message.get("type") or "unknown")[:32],
                        body=body,
                        content=content,
                        status=Message.Status.RECEIVED,
                        error=message_error(message),
                        created_at=meta_time(message.get("timestamp")) or now,
                    ),
                )
            )

    def store(self) -> None:
        if not self.messages:
            return
        conversations = _conversations_for_customers(self.customers)
        latest: dict[Any, datetime] = {}
        for key, row in self.messages:
            row.conversation_id = conversation_id = conversations[key]
            at = row.created_at
            latest[conversation_id] = max(latest.get(conversation_id, at), at)
        rows = [row for _, row in self.messages]
        # ON CONFLICT DO NOTHING on the wamid unique constraint: a duplicate
        # delivery stores nothing, whatever else runs at the same time.
        Message.objects.bulk_create(rows, ignore_conflicts=True)
        _references_link(rows)
        conversations_touch(latest, inbound=True)
        by_salon: dict[Any, list] = defaultdict(list)
        for (salon_id, _), conversation_id in conversations.items():
            by_salon[salon_id].append(conversation_id)
        for salon_id, conversation_ids in by_salon.items():
            messages_changed_on_commit(salon_id, conversation_ids)


def _conversations_for_customers(customers: dict[CustomerKey, dict[str, str]]):
    """customer -> conversation id, creating the missing conversations.

    Safe under concurrency: the (salon, customer_wa_id) unique constraint
    decides, not a check-then-insert. Existing conversations take the new
    non-empty name and business-scoped user id.
    """

    def existing(keys) -> dict[CustomerKey, Conversation]:
        wa_ids_by_salon: dict[Any, list[str]] = defaultdict(list)
        for salon_id, wa_id in keys:
            wa_ids_by_salon[salon_id].append(wa_id)
        condition = Q(pk__in=[])
        for salon_id, wa_ids in wa_ids_by_salon.items():
            condition |= Q(salon_id=salon_id, customer_wa_id__in=wa_ids)
        return {
            (c.salon_id, c.customer_wa_id): c
            for c in Conversation.objects.filter(condition).only(
                "pk", "salon_id", "customer_wa_id", "customer_name", "customer_user_id"
            )
        }

    found = existing(customers)
    missing = [key for key in customers if key not in found]
    if missing:
        Conversation.objects.bulk_create(
            [
                Conversation(salon_id=salon_id, customer_wa_id=wa_id, **customers[key])
                for key in missing
                for salon_id, wa_id in [key]
            ],
            ignore_conflicts=True,
        )
        found |= existing(missing)
    for key, profile in customers.items():
        conversation = found[key]
        changed = {
            field: value
            for field, value in profile.items()
            if value and getattr(conversation, field) != value
        }
        if changed:
            Conversation.objects.filter(pk=conversation.pk).update(**changed)
    return {key: conversation.pk for key, conversation in found.items()}


def _references_link(rows: list[Message]) -> None:
    """Link replies to the message they quote and reactions to the message they
    react to, within the salon; the quoted message may be in the same batch."""
    wanted: dict[Message, tuple[str, str]] = {}
    for row in rows:
        reply_to = str(as_dict(row.content.get("context")).get("id") or "")
        reaction_to = (
            str(row.content.get("message_id") or "") if row.type == "reaction" else ""
        )
        if reply_to or reaction_to:
            wanted[row] = (reply_to, reaction_to)
    if not wanted:
        return
    wamids = {wamid for pair in wanted.values() for wamid in pair if wamid}
    known = {
        (salon_id, wamid): pk
        for wamid, pk, salon_id in Message.objects.filter(wamid__in=wamids).values_list(
            "wamid", "pk", "salon_id"
        )
    }
    for row, (reply_to, reaction_to) in wanted.items():
        row.reply_to_id = known.get((row.salon_id, reply_to))
        row.reaction_to_id = known.get((row.salon_id, reaction_to))
    # A row that was a duplicate delivery has no row under its pk: no-op.
    Message.objects.bulk_update(list(wanted), ["reply_to", "reaction_to"])
