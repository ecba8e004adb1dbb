"""The WhatsApp webhook inbox: Meta's bodies stored first, then turned into
conversations and messages on ``whatsapp:webhook``.

Receiving costs one INSERT and, after commit, a *kick*: a ``SET NX`` of a flag
on the broker's Redis that lets at most one drain job be queued per burst. The
drain job claims pending events in batches (``FOR UPDATE SKIP LOCKED``),
applies a whole batch with a constant number of queries, and goes on until
nothing is pending. Under load a job and a transaction carry many events, so
neither Celery's per-job cost nor a commit is paid per webhook.

Nothing waits forever and nothing is stored twice:
- the flag expires unless a live drain job keeps refreshing it, so a killed
  worker only delays the next kick;
- a kick that fails (broker down) leaves the event pending, and any later kick
  drains it, as does beat's re-drive of events pending for too long;
- a batch commits its messages and its events' statuses together, and the
  wamid unique constraint makes a replayed batch store nothing twice.
"""

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from bookings.models import Salon
from messaging.models import Conversation, Message, WebhookEvent
from messaging.payloads import (
    as_dict,
    as_list,
    inbound_content,
    message_error,
    meta_time,
)
from messaging.services import (
    STATUS_FIELDS,
    conversations_touch,
    messages_changed_on_commit,
)
from queues.bootsteps import PAUSED_KEY
from queues.definitions import WEBHOOK, Priority, RetryableJobError
from queues.services import job_enqueue, job_enqueue_durable
from saas.redis import queue_redis
from saas.services import rows_claim_for_redrive

logger = logging.getLogger(__name__)

#: On the broker's Redis: set while a drain job is queued or running.
DRAIN_FLAG_KEY = "whatsapp:webhook:drain"

#: Statuses applied per message-status job: a 10,000-status body becomes 100
#: small jobs, never one huge one.
STATUS_BATCH_SIZE = 100


# --- Receiving ------------------------------------------------------------------


def webhook_event_receive(*, body: str, priority: int | None = None) -> WebhookEvent:
    """Store a verified webhook body; after commit, make sure it gets drained.

    With ``priority`` (the seed's ``addWebhookJob``), the event gets a job of
    its own at that priority instead of joining the drain.

    Not wrapped in atomic on purpose: one INSERT commits by itself, and the
    BEGIN/COMMIT round trips would sit on the webhook's answer time.
    """
    event = WebhookEvent.objects.create(received_at=timezone.now(), body=body)
    if priority is None:
        transaction.on_commit(webhook_drain_kick)
    else:
        transaction.on_commit(lambda: webhook_event_enqueue(event.pk, priority))
    return event


def webhook_event_enqueue(event_id: int, priority: int = Priority.WEBHOOK) -> bool:
    """A job for this one event (explicit jobs, and the admin's retries)."""
    from messaging.tasks import webhook_event_process_task

    return job_enqueue_durable(
        webhook_event_process_task,
        what=f"Webhook event {event_id}",
        kwargs={"event_id": event_id},
        priority=priority,
    )


def webhook_drain_kick(*, force: bool = False) -> bool:
    """Queue a drain job unless one is queued or running already (``force``:
    queue one anyway). True if one was queued."""
    from messaging.tasks import webhook_events_drain_task

    ttl = settings.WHATSAPP_WEBHOOK_DRAIN_FLAG_SECONDS
    try:
        client = queue_redis()
        if force:
            client.set(DRAIN_FLAG_KEY, "queued", ex=ttl)
        elif not client.set(DRAIN_FLAG_KEY, "queued", nx=True, ex=ttl):
            return False
    except Exception as exc:  # redis-py's errors; the broker is the same Redis
        logger.warning("Webhook drain not enqueued (%r); beat re-drives it", exc)
        return False
    queued = job_enqueue_durable(
        webhook_events_drain_task, what="Webhook drain", priority=Priority.WEBHOOK
    )
    if not queued:
        _drain_flag_clear()  # so that the next webhook tries again
    return queued


def _drain_flag_hold() -> bool:
    """Refresh the flag; True if the queue has been paused from the queue page
    or API (a running drain job is the one thing the pause cannot stop)."""
    try:
        pipe = queue_redis().pipeline(transaction=False)
        pipe.set(
            DRAIN_FLAG_KEY, "running", ex=settings.WHATSAPP_WEBHOOK_DRAIN_FLAG_SECONDS
        )
        pipe.sismember(PAUSED_KEY, WEBHOOK.name)
        return bool(pipe.execute()[1])
    except Exception as exc:
        logger.debug("Drain flag not refreshed: %r", exc)
        return False


def _drain_flag_clear() -> None:
    try:
        queue_redis().delete(DRAIN_FLAG_KEY)
    except Exception as exc:
        logger.debug("Drain flag not cleared: %r", exc)


def webhook_events_redrive(*, older_than: timedelta, limit: int = 1000) -> list[int]:
    """Pending events older than ``older_than`` that were not re-driven within
    that time (their kick failed, or their job died): mark them and queue a
    drain job, which takes every pending event. Returns their ids."""
    ids = [
        event.pk
        for event in rows_claim_for_redrive(
            WebhookEvent.objects.filter(status=WebhookEvent.Status.PENDING).only("pk"),
            stale_field="received_at",
            older_than=older_than,
            order_by="received_at",
            limit=limit,
        )
    ]
    if ids:
        logger.warning("Re-driving %d pending webhook events", len(ids))
        webhook_drain_kick(force=True)
    return ids


# --- Draining -------------------------------------------------------------------


def webhook_events_drain(
    *, batch_size: int, time_budget: float, linger: float = 0.0
) -> int:
    """Process pending events batch after batch until none is left; returns how
    many. It stops when the queue is paused.

    After a batch that was not full the job waits ``linger`` seconds before
    claiming again, so that under a steady stream it takes fewer, fuller
    batches (and webhooks find the flag set and queue nothing) for at most
    that much more latency. Past ``time_budget`` seconds a fresh job takes
    over, so one job never runs into the time limits however long the backlog.
    """
    deadline = time.monotonic() + time_budget
    drained = 0
    idle_polls = 0
    while True:
        if _drain_flag_hold():
            # Paused: stop here and leave a job waiting in the queue, so that
            # draining resumes with the queue.
            logger.info("whatsapp:webhook is paused: drain stops, a job waits")
            webhook_drain_kick(force=True)
            return drained
        claimed = webhook_events_process_batch(limit=batch_size)
        drained += claimed
        if claimed and time.monotonic() > deadline:
            webhook_drain_kick(force=True)
            return drained
        if claimed == batch_size:
            continue
        idle_polls = 0 if claimed else idle_polls + 1
        if linger and idle_polls < 2:
            time.sleep(linger)
            continue
        _drain_flag_clear()
        # A webhook stored after our last claim may have found the flag set
        # and queued nothing: look once more now that the flag is gone.
        claimed = webhook_events_process_batch(limit=batch_size)
        drained += claimed
        if not claimed:
            return drained


def webhook_events_process_batch(*, limit: int) -> int:
    """Claim up to ``limit`` pending events nobody holds and apply them in one
    transaction. Returns how many were claimed.

    A database or broker error rolls the batch back and raises
    RetryableJobError. Any other error (a bug, or data we did not foresee) is
    narrowed down by processing the batch's events one by one, so that only
    the culprit is marked failed.
    """
    event_ids: list[int] = []
    try:
        with transaction.atomic():
            events = list(
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(status=WebhookEvent.Status.PENDING)
                .order_by("received_at")[:limit]
            )
            event_ids = [event.pk for event in events]
            if events:
                _webhook_events_apply(events)
    except (OperationalError, InterfaceError, BrokerError) as exc:
        raise RetryableJobError(f"webhook batch: {exc!r}") from exc
    except Exception:
        logger.exception(
            "Webhook batch of %d failed; processing its events one by one",
            len(event_ids),
        )
        for event_id in event_ids:
            try:
                webhook_event_process(event_id=event_id)
            except RetryableJobError:
                raise
            except Exception:  # marked failed, with the error, by the call
                pass
    return len(event_ids)


def webhook_event_process(*, event_id: int) -> WebhookEvent | None:
    """Apply one stored event; None if it was done already. Idempotent.

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
            _webhook_events_apply([event], raise_errors=True)
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


def _webhook_events_apply(
    events: list[WebhookEvent], *, raise_errors: bool = False
) -> None:
    """In the caller's transaction: store what the events' bodies carry, mark
    each event, and fan their statuses out.

    An event whose body cannot be read is marked failed on its own (or, with
    ``raise_errors``, raises), without touching the others.
    """
    payloads = {}
    for event in events:
        try:
            payloads[event.pk] = json.loads(event.body)
        except ValueError:
            if raise_errors:
                raise
            payloads[event.pk] = None
    salons = _salons_by_number(payloads.values())
    batch = _Inbound()
    statuses: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        event.attempts += 1
        try:
            if payloads[event.pk] is None:
                raise ValueError("the stored body is not JSON")
            outcome = _Outcome()
            inbound = _payload_walk(payloads[event.pk], salons, outcome)
        except Exception as exc:
            if raise_errors:
                raise
            logger.exception("Webhook event %s failed", event.pk)
            event.status = WebhookEvent.Status.FAILED
            event.last_error = repr(exc)[:4000]
            continue
        batch.merge(inbound)
        for salon_id, salon_statuses in outcome.statuses.items():
            statuses[salon_id].extend(salon_statuses)
        event.status = (
            WebhookEvent.Status.IGNORED
            if outcome.ignored_only
            else WebhookEvent.Status.PROCESSED
        )
        event.last_error = "; ".join(outcome.notes)[:4000]
    batch.store()
    _events_mark(events)
    # Published before commit on purpose: a crash between commit and publish
    # would lose them, while publishing twice (this batch rolled back and ran
    # again) is harmless, as statuses apply idempotently.
    for salon_id, salon_statuses in statuses.items():
        _message_statuses_enqueue(salon_id, salon_statuses)


def _events_mark(events: list[WebhookEvent]) -> None:
    """Write the events' outcomes: one UPDATE per distinct outcome, which under
    load is one for the whole batch."""
    processed_at = timezone.now()
    outcomes: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in events:
        if event.status != WebhookEvent.Status.FAILED:
            event.processed_at = processed_at
        outcomes[(event.status, event.last_error)].append(event.pk)
    for (status, last_error), ids in outcomes.items():
        WebhookEvent.objects.filter(pk__in=ids).update(
            status=status,
            attempts=F("attempts") + 1,
            last_error=last_error,
            processed_at=None if status == WebhookEvent.Status.FAILED else processed_at,
        )


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


# --- Walking a body -------------------------------------------------------------


@dataclass
class _Outcome:
    """What one body came to: notes for its event, statuses to fan out."""

    notes: list[str] = dataclass_field(default_factory=list)
    statuses: dict[str, list[dict]] = dataclass_field(default_factory=dict)
    values: int = 0
    ignored_values: int = 0

    @property
    def ignored_only(self) -> bool:
        return self.values > 0 and self.ignored_values == self.values


def _phone_number_id(value: dict) -> str:
    return str(as_dict(value.get("metadata")).get("phone_number_id") or "")


def _changes(payload: Any):
    for entry in as_list(as_dict(payload).get("entry")):
        for change in as_list(as_dict(entry).get("changes")):
            yield as_dict(change)


def _salons_by_number(payloads) -> dict[str, Salon]:
    """The salons the bodies are for, in one query."""
    numbers = {
        _phone_number_id(as_dict(change.get("value")))
        for payload in payloads
        for change in _changes(payload)
    }
    numbers.discard("")
    if not numbers:
        return {}
    return {
        salon.whatsapp_phone_number_id: salon
        for salon in Salon.objects.filter(whatsapp_phone_number_id__in=numbers)
    }


def _payload_walk(payload: Any, salons: dict[str, Salon], outcome: _Outcome):
    """Walk every entry, change, message and status (Meta batches at every
    level); returns the inbound messages to store."""
    inbound = _Inbound()
    for change in _changes(payload):
        if change.get("field", "messages") != "messages":
            outcome.notes.append(f"skipped field {change.get('field')!r}")
            continue
        value = as_dict(change.get("value"))
        outcome.values += 1
        phone_number_id = _phone_number_id(value)
        salon = salons.get(phone_number_id)
        if salon is None:
            outcome.ignored_values += 1
            outcome.notes.append(f"unknown phone_number_id {phone_number_id!r}")
            logger.warning(
                "Webhook for unknown phone_number_id %r ignored", phone_number_id
            )
            continue
        for error in as_list(value.get("errors")):
            error = as_dict(error)
            outcome.notes.append(f"value error {error.get('code')}")
            logger.warning(
                "WhatsApp reported an error for salon %s: %s %s (%s)",
                salon.pk,
                error.get("code"),
                error.get("title"),
                as_dict(error.get("error_data")).get("details", ""),
            )
        inbound.add_value(salon, value, outcome)
        statuses = [
            status
            for status in as_list(value.get("statuses"))
            if _status_is_readable(status, outcome)
        ]
        if statuses:
            outcome.statuses.setdefault(str(salon.pk), []).extend(statuses)
    if outcome.values == 0:
        outcome.notes.append("no entry[].changes[] in the body")
    return inbound


def _status_is_readable(status: Any, outcome: _Outcome) -> bool:
    status = as_dict(status)
    if status.get("id") and status.get("status") in STATUS_FIELDS:
        return True
    outcome.notes.append(
        f"skipped status {status.get('status')!r} for {status.get('id')!r}"
    )
    return False


# --- Storing inbound messages in bulk --------------------------------------------

#: (salon id, customer wa_id): a conversation's natural key.
CustomerKey = tuple[Any, str]


@dataclass
class _Inbound:
    """Inbound messages of one or many bodies, stored with a constant number of
    queries whatever their count."""

    #: customer -> {"customer_name": ..., "customer_user_id": ...}; a later
    #: body's non-empty values win, as if the bodies were applied in turn.
    customers: dict[CustomerKey, dict[str, str]] = dataclass_field(default_factory=dict)
    messages: list[tuple[CustomerKey, Message]] = dataclass_field(default_factory=list)

    def merge(self, other: "_Inbound") -> None:
        for key, profile in other.customers.items():
            known = self.customers.setdefault(key, {})
            known.update({field: value for field, value in profile.items() if value})
        self.messages.extend(other.messages)

    def add_value(self, salon: Salon, value: dict, outcome: _Outcome) -> None:
        contacts = {
            str(as_dict(c).get("wa_id")): as_dict(c)
            for c in as_list(value.get("contacts"))
        }
        now = timezone.now()
        for message in as_list(value.get("messages")):
            message = as_dict(message)
            wamid, sender = message.get("id"), message.get("from")
            if not wamid or not sender:
                outcome.notes.append("skipped a message without id or from")
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
