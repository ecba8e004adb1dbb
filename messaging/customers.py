"""Who wrote: one conversation per customer per salon.

A customer is known by phone number (``customer_wa_id``) when WhatsApp shares
it, by business-scoped user id (BSUID, ``customer_user_id``) otherwise, and
by both once both are seen. Messages arrive carrying either or both, and
``system`` messages retire old identifiers for new ones, so the identifiers a
batch mentions are grouped (union-find): identifiers seen together, or on one
stored conversation, are one person. Each group ends as one conversation:
the oldest of its conversations survives, the others are merged into it
(messages moved), and it takes the newest identifiers.

Constant queries per batch whatever its size, and safe under concurrent
drains: the partial unique constraints on (salon, wa_id) and (salon, user_id)
decide who creates a conversation (INSERT ... ON CONFLICT DO NOTHING), and a
lost race is resolved by reading again.
"""

import logging
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, Q, When

from messaging.models import Conversation, Message
from messaging.services import conversations_touch, messages_changed_on_commit
from queues.definitions import RetryableJobError

logger = logging.getLogger(__name__)

#: ("p", phone) or ("u", BSUID), per salon.
Node = tuple[Any, str, str]

PROFILE_FIELDS = ("customer_name", "customer_username", "customer_parent_user_id")
IDENTITY_FIELDS = ("customer_wa_id", "customer_user_id", *PROFILE_FIELDS)
_ATTEMPTS = 3


@dataclass
class Sighting:
    """What one message says about its sender."""

    salon_id: Any
    phone: str
    user_id: str
    at: datetime
    profile: dict[str, str] = dataclass_field(default_factory=dict)
    #: Identifiers a ``system`` message says the customer no longer has.
    retired: tuple[tuple[str, str], ...] = ()

    def nodes(self) -> list[Node]:
        own = [("p", self.phone), ("u", self.user_id)]
        return [(self.salon_id, kind, value) for kind, value in own if value] + [
            (self.salon_id, kind, value) for kind, value in self.retired if value
        ]


class _Groups:
    """Union-find over identifiers."""

    def __init__(self):
        self.parent: dict[Node, Node] = {}

    def find(self, node: Node) -> Node:
        self.parent.setdefault(node, node)
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, nodes: list[Node]) -> None:
        if not nodes:
            return
        root = self.find(nodes[0])
        for node in nodes[1:]:
            other = self.find(node)
            if other != root:
                self.parent[other] = root


def _conversation_nodes(conversation: Conversation) -> list[Node]:
    nodes = []
    if conversation.customer_wa_id:
        nodes.append((conversation.salon_id, "p", conversation.customer_wa_id))
    if conversation.customer_user_id:
        nodes.append((conversation.salon_id, "u", conversation.customer_user_id))
    return nodes


def _conversations_with(nodes: set[Node]) -> list[Conversation]:
    phones: dict[Any, list[str]] = {}
    users: dict[Any, list[str]] = {}
    for salon_id, kind, value in nodes:
        (phones if kind == "p" else users).setdefault(salon_id, []).append(value)
    condition = Q(pk__in=[])
    for salon_id, values in phones.items():
        condition |= Q(salon_id=salon_id, customer_wa_id__in=values)
    for salon_id, values in users.items():
        condition |= Q(salon_id=salon_id, customer_user_id__in=values)
    return list(
        Conversation.objects.filter(condition)
        .only(*IDENTITY_FIELDS, "pk", "salon_id", "created_at")
        .order_by("created_at", "pk")
    )


def _grouped(sightings: list[Sighting], conversations: list[Conversation]):
    groups = _Groups()
    for sighting in sightings:
        groups.union(sighting.nodes())
    for conversation in conversations:
        groups.union(_conversation_nodes(conversation))
    by_root: dict[Node, list[Conversation]] = {}
    for conversation in conversations:  # oldest first
        root = groups.find(_conversation_nodes(conversation)[0])
        by_root.setdefault(root, []).append(conversation)
    return groups, by_root


def _identity(start: dict[str, str], sightings: list[Sighting]) -> dict[str, str]:
    """The identifiers and profile a conversation ends with: the sightings
    applied in time order over what it had."""
    identity = dict(start)
    retired: set[tuple[str, str]] = set()
    for sighting in sorted(sightings, key=lambda s: s.at):
        retired.update(sighting.retired)
        if ("p", identity["customer_wa_id"]) in retired:
            identity["customer_wa_id"] = ""
        if ("u", identity["customer_user_id"]) in retired:
            identity["customer_user_id"] = ""
            identity["customer_parent_user_id"] = ""
        # A late message from a retired identifier joins the conversation
        # without bringing that identifier back.
        if sighting.phone and ("p", sighting.phone) not in retired:
            identity["customer_wa_id"] = sighting.phone
        if sighting.user_id and ("u", sighting.user_id) not in retired:
            identity["customer_user_id"] = sighting.user_id
        for key, value in sighting.profile.items():
            if value:
                identity[key] = value
    return identity


def conversations_resolve(sightings: list[Sighting]) -> list:
    """The conversation id of each sighting's customer, creating, merging
    and re-keying conversations as needed. In the caller's transaction."""
    if not sightings:
        return []
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with transaction.atomic():  # a savepoint: a lost race is retried
                return _resolve(sightings)
        except IntegrityError as exc:
            logger.info("Conversation race lost (attempt %d): %r", attempt, exc)
            if attempt == _ATTEMPTS:
                raise RetryableJobError(f"conversation race: {exc!r}") from exc
    raise AssertionError("unreachable")


def _resolve(sightings: list[Sighting]) -> list:
    nodes = {node for sighting in sightings for node in sighting.nodes()}
    conversations = _conversations_with(nodes)
    groups, by_root = _grouped(sightings, conversations)
    missing: dict[Node, list[Sighting]] = {}
    for sighting in sightings:
        root = groups.find(sighting.nodes()[0])
        if root not in by_root:
            missing.setdefault(root, []).append(sighting)
    if missing:
        empty = dict.fromkeys(IDENTITY_FIELDS, "")
        Conversation.objects.bulk_create(
            [
                Conversation(salon_id=group[0].salon_id, **_identity(empty, group))
                for group in missing.values()
            ],
            ignore_conflicts=True,
        )
        conversations = _conversations_with(nodes)
        groups, by_root = _grouped(sightings, conversations)
    by_group: dict[Node, list[Sighting]] = {}
    for sighting in sightings:
        by_group.setdefault(groups.find(sighting.nodes()[0]), []).append(sighting)
    survivors: dict[Node, Conversation] = {}
    identities: dict[Any, dict[str, str]] = {}
    moves: dict[Any, Any] = {}
    merged: list[Conversation] = []
    for root, group in by_group.items():
        found = by_root.get(root)
        if not found:  # its INSERT lost to a row we cannot see yet
            raise IntegrityError(f"no conversation for {root!r} after insert")
        survivor, losers = found[0], found[1:]
        survivors[root] = survivor
        start = {field: getattr(survivor, field) for field in IDENTITY_FIELDS}
        for loser in losers:
            moves[loser.pk] = survivor.pk
            merged.append(loser)
            for field in IDENTITY_FIELDS:
                start[field] = start[field] or getattr(loser, field)
        identity = _identity(start, group)
        if not (identity["customer_wa_id"] or identity["customer_user_id"]):
            identity["customer_wa_id"] = start["customer_wa_id"]
            identity["customer_user_id"] = start["customer_user_id"]
        identities[survivor.pk] = identity
    _conversations_merge(moves)
    for loser in merged:  # their cached copies go
        messages_changed_on_commit(loser.salon_id, [loser.pk])
    for survivor in survivors.values():
        changed = {
            field: value
            for field, value in identities[survivor.pk].items()
            if getattr(survivor, field) != value
        }
        if changed:
            Conversation.objects.filter(pk=survivor.pk).update(**changed)
    return [survivors[groups.find(s.nodes()[0])].pk for s in sightings]


def _conversations_merge(moves: dict[Any, Any]) -> None:
    """Move the messages of each merged conversation to its survivor and
    delete it: one person, one conversation. Its times carry over."""
    if not moves:
        return
    logger.info("Merging %d conversations of customers seen twice", len(moves))
    Message.objects.filter(conversation_id__in=list(moves)).update(
        conversation_id=Case(
            *[When(conversation_id=old, then=new) for old, new in moves.items()]
        )
    )
    times = {
        pk: (last_message_at, last_inbound_at)
        for pk, last_message_at, last_inbound_at in Conversation.objects.filter(
            pk__in=list(moves)
        ).values_list("pk", "last_message_at", "last_inbound_at")
    }
    Conversation.objects.filter(pk__in=list(moves)).delete()
    latest: dict[Any, list[datetime]] = {}
    inbound: dict[Any, list[datetime]] = {}
    for old, (message_at, inbound_at) in times.items():
        if message_at:
            latest.setdefault(moves[old], []).append(message_at)
        if inbound_at:
            inbound.setdefault(moves[old], []).append(inbound_at)
    conversations_touch({pk: max(at) for pk, at in latest.items()}, inbound=False)
    _inbound_touch({pk: max(at) for pk, at in inbound.items()})


def _inbound_touch(latest: dict[Any, datetime]) -> None:
    for pk, at in latest.items():
        Conversation.objects.filter(
            Q(last_inbound_at__isnull=True) | Q(last_inbound_at__lt=at), pk=pk
        ).update(last_inbound_at=at)
