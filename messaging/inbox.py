"""The WhatsApp webhook inbox: Meta's bodies stored first, then turned into
conversations and messages on ``whatsapp:webhook``. This module is the drain
protocol; reading a body is messaging/inbox_reading.py, storing what it
carries messaging/inbox_storage.py.

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
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from messaging.inbox_reading import Outcome, payload_walk, salons_by_number
from messaging.inbox_storage import Inbound
from messaging.models import WebhookEvent
from messaging.services import MESSAGE_STATUSES_APPLY_TASK
from queues.definitions import MESSAGE_STATUS, WEBHOOK, Priority, RetryableJobError
from queues.keys import DRAIN_FLAG_KEY, PAUSED_KEY
from queues.publish import job_publish
from saas.redis import queue_redis
from saas.services import rows_claim_for_redrive

logger = logging.getLogger(__name__)

#: Jobs of whatsapp:webhook (messaging/tasks.py), published by name.
WEBHOOK_EVENT_PROCESS_TASK = "messaging.webhook_event_process"
WEBHOOK_EVENTS_DRAIN_TASK = "messaging.webhook_events_drain"

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
    published = job_publish(
        WEBHOOK_EVENT_PROCESS_TASK,
        queue=WEBHOOK,
        durable=f"Webhook event {event_id}",
        kwargs={"event_id": event_id},
        priority=priority,
    )
    return published is not None


def webhook_drain_kick(*, force: bool = False) -> bool:
    """Queue a drain job unless one is queued or running already (``force``:
    queue one anyway). True if one was queued."""
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
    queued = (
        job_publish(WEBHOOK_EVENTS_DRAIN_TASK, queue=WEBHOOK, durable="Webhook drain")
        is not None
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
    salons = salons_by_number(payloads.values())
    batch = Inbound()
    statuses: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        event.attempts += 1
        try:
            if payloads[event.pk] is None:
                raise ValueError("the stored body is not JSON")
            outcome = Outcome()
            inbound = payload_walk(payloads[event.pk], salons, outcome)
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
    for start in range(0, len(statuses), STATUS_BATCH_SIZE):
        job_publish(
            MESSAGE_STATUSES_APPLY_TASK,
            queue=MESSAGE_STATUS,
            kwargs={
                "salon_id": salon_id,
                "statuses": statuses[start : start + STATUS_BATCH_SIZE],
            },
        )
