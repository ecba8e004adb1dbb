"""Storing inbound messages in bulk: the messages of one or many webhook
bodies, their conversations and the replies and reactions they link, with a
constant number of queries whatever their count."""

from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from bookings.models import Salon
from messaging.customers import Sighting, conversations_resolve
from messaging.inbox_edits import edits_apply, reactions_supersede
from messaging.media import media_downloads_publish
from messaging.models import Message
from messaging.payloads import (
    MEDIA_TYPES,
    as_dict,
    as_list,
    inbound_content,
    message_error,
    meta_time,
)
from messaging.services import conversations_touch, messages_changed_on_commit

#: System messages that move the customer to new identifiers.
IDENTITY_CHANGES = ("user_changed_number", "user_changed_user_id")


@dataclass
class Inbound:
    """Inbound messages of one or many bodies, stored with a constant number of
    queries whatever their count."""

    messages: list[tuple[Sighting, Message]] = dataclass_field(default_factory=list)

    def merge(self, other: "Inbound") -> None:
        self.messages.extend(other.messages)

    def add_value(self, salon: Salon, value: dict, notes: list[str]) -> None:
        by_phone, by_user = {}, {}
        for contact in as_list(value.get("contacts")):
            contact = as_dict(contact)
            if contact.get("wa_id"):
                by_phone[str(contact["wa_id"])] = contact
            if contact.get("user_id"):
                by_user[str(contact["user_id"])] = contact
        now = timezone.now()
        for message in as_list(value.get("messages")):
            message = as_dict(message)
            wamid = message.get("id")
            phone = str(message.get("from") or "")
            user_id = str(message.get("from_user_id") or "")
            if not wamid or not (phone or user_id):
                notes.append("skipped a message without id or from (or from_user_id)")
                continue
            contact = by_phone.get(phone) or by_user.get(user_id) or {}
            at = meta_time(message.get("timestamp")) or now
            sighting = _sighting(salon, message, contact, phone, user_id, at)
            kind = str(message.get("type") or "unknown")[:32]
            body, content = inbound_content(message)
            context = as_dict(message.get("context"))
            if context:
                content["context"] = context
            media = kind in MEDIA_TYPES and bool(content.get("id"))
            self.messages.append(
                (
                    sighting,
                    Message(
                        salon=salon,
                        wamid=str(wamid),
                        direction=Message.Direction.INBOUND,
                        type=kind,
                        body=body,
                        content=content,
                        status=Message.Status.RECEIVED,
                        error=message_error(message),
                        created_at=at,
                        media_status=(
                            Message.MediaStatus.PENDING
                            if media
                            else Message.MediaStatus.NONE
                        ),
                    ),
                )
            )

    def store(self) -> None:
        if not self.messages:
            return
        sightings = [sighting for sighting, _ in self.messages]
        conversation_ids = conversations_resolve(sightings)
        latest: dict[Any, datetime] = {}
        latest_inbound: dict[Any, datetime] = {}
        for (_, row), conversation_id in zip(
            self.messages, conversation_ids, strict=True
        ):
            row.conversation_id = conversation_id
            at = row.created_at
            latest[conversation_id] = max(latest.get(conversation_id, at), at)
            if row.type != "system":  # not the customer writing
                latest_inbound[conversation_id] = max(
                    latest_inbound.get(conversation_id, at), at
                )
        rows = [row for _, row in self.messages]
        edits = [row for row in rows if row.type == "edit"]
        # ON CONFLICT DO NOTHING on the wamid unique constraint: a duplicate
        # delivery stores nothing, whatever else runs at the same time.
        Message.objects.bulk_create(
            [row for row in rows if row.type != "edit"], ignore_conflicts=True
        )
        # An edit changes the message it edits; one whose original we never
        # stored is kept as a message of its own, so nothing is lost.
        unapplied = edits_apply(edits)
        if unapplied:
            Message.objects.bulk_create(unapplied, ignore_conflicts=True)
        _references_link(rows)
        reactions_supersede(rows)
        conversations_touch(latest, inbound=False)
        conversations_touch(latest_inbound, inbound=True)
        by_salon: dict[Any, list] = defaultdict(list)
        for row in rows:
            by_salon[row.salon_id].append(row.conversation_id)
        for salon_id, ids in by_salon.items():
            messages_changed_on_commit(salon_id, ids)
        media = [row.pk for row in rows if row.media_status]
        if media:
            transaction.on_commit(lambda: media_downloads_publish(media))


def _sighting(
    salon: Salon, message: dict, contact: dict, phone: str, user_id: str, at
) -> Sighting:
    profile = as_dict(contact.get("profile"))
    user_id = user_id or str(contact.get("user_id") or "")
    sighting = Sighting(
        salon_id=salon.pk,
        phone=phone,
        user_id=user_id,
        at=at,
        profile={
            "customer_name": str(profile.get("name") or "")[:200],
            "customer_username": str(profile.get("username") or "")[:100],
            "customer_parent_user_id": str(
                message.get("from_parent_user_id")
                or contact.get("parent_user_id")
                or ""
            )[:140],
        },
    )
    system = as_dict(message.get("system"))
    if message.get("type") == "system" and system.get("type") in IDENTITY_CHANGES:
        new_phone = str(system.get("wa_id") or "")
        new_user = str(system.get("user_id") or "")
        previous_user = str(system.get("previous_user_id") or "")
        retired = []
        if new_phone and phone and new_phone != phone:
            retired.append(("p", phone))
        for old in (user_id, previous_user):
            if new_user and old and old != new_user:
                retired.append(("u", old))
        sighting.phone = new_phone or phone
        sighting.user_id = new_user or user_id
        sighting.retired = tuple(dict.fromkeys(retired))
    return sighting


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
