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
  wamid unique constraint makes a replayed batch store nothing twice;
- a body that kills the worker is claimed a few times, alone, then
  quarantined (messaging/inbox_claims.py), and the rest go through.

Webhooks reach ``webhook_event_receive`` one by one from the seed's facade;
the web's path stores them by group commit (messaging/inbox_commit.py).
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from messaging.inbox_apply import webhook_events_apply
from messaging.inbox_claims import (
    claims_add,
    claims_forget,
    claims_read,
    webhook_events_quarantine,
)
from messaging.models import WebhookEvent
from queues.definitions import WEBHOOK, Priority, RetryableJobError
from queues.keys import DRAIN_FLAG_KEY, PAUSED_KEY
from queues.publish import job_publish
from saas.redis import queue_redis
from saas.services import rows_claim_for_redrive

logger = logging.getLogger(__name__)

#: Jobs of whatsapp:webhook (messaging/tasks.py), published by name.
WEBHOOK_EVENT_PROCESS_TASK = "messaging.webhook_event_process"
WEBHOOK_EVENTS_DRAIN_TASK = "messaging.webhook_events_drain"


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


def webhook_event_release(*, event_id: int) -> bool:
    """An operator's re-drive of a quarantined event: pending again, its
    claims forgotten, a drain kicked. False if it was not quarantined."""
    released = WebhookEvent.objects.filter(
        pk=event_id, status=WebhookEvent.Status.QUARANTINED
    ).update(status=WebhookEvent.Status.PENDING, redriven_at=timezone.now())
    if released:
        claims_forget([event_id])
        logger.warning("Quarantined webhook event %s re-driven", event_id)
        transaction.on_commit(webhook_drain_kick)
    return bool(released)


# --- Draining -------------------------------------------------------------------


def webhook_events_drain(
    *,
    batch_size: int,
    time_budget: float,
    linger: float = 0.0,
    linger_min: float | None = None,
) -> int:
    """Process pending events batch after batch until none is left; returns how
    many. It stops when the queue is paused.

    After a batch that was not full the job waits before claiming again, so
    that under a steady stream it takes fuller batches (and webhooks find the
    flag set and queue nothing). The wait adapts to the stream: from
    ``linger_min`` after a batch that came back nearly empty (moderate load:
    an event waits a few ms, not ``linger``) up to ``linger`` as batches fill
    (heavy load: fewer, fuller transactions); a full batch does not wait at
    all. The job stops once nothing came for twice ``linger``. Past
    ``time_budget`` seconds a fresh job takes over, so one job never runs into
    the time limits however long the backlog.
    """
    if linger_min is None:
        linger_min = linger
    deadline = time.monotonic() + time_budget
    drained = 0
    idle_since: float | None = None
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
        if claimed >= batch_size:
            idle_since = None
            continue
        now = time.monotonic()
        if claimed:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        if linger and (idle_since is None or now - idle_since < 2 * linger):
            time.sleep(drain_linger(claimed, batch_size, linger_min, linger))
            continue
        _drain_flag_clear()
        # A webhook stored after our last claim may have found the flag set
        # and queued nothing: look once more now that the flag is gone.
        claimed = webhook_events_process_batch(limit=batch_size)
        drained += claimed
        if not claimed:
            return drained


def drain_linger(claimed: int, batch_size: int, low: float, high: float) -> float:
    """The wait before the next claim: ``low`` after an empty or nearly empty
    batch, growing with how full the last batch was, ``high`` at most."""
    fill = min(1.0, claimed / batch_size) if batch_size else 1.0
    return min(high, max(low, low + (high - low) * fill))


def webhook_events_process_batch(*, limit: int) -> int:
    """Claim up to ``limit`` pending events nobody holds and apply them in one
    transaction. Returns how many were claimed.

    Each event's claim is counted on the broker's Redis before any work on
    it (messaging/inbox_claims.py), so a worker that dies mid-batch leaves a
    trace its transaction cannot roll back: an event claimed before and never
    finished is applied alone, after the batch; one claimed
    WHATSAPP_WEBHOOK_MAX_CLAIMS times is quarantined instead.

    A database or broker error rolls the batch back and raises
    RetryableJobError. Any other error (a bug, or data we did not foresee) is
    narrowed down by processing the batch's events one by one, so that only
    the culprit is marked failed.
    """
    event_ids: list[int] = []
    fresh: list[int] = []
    suspects: list[int] = []
    try:
        with transaction.atomic():
            events = list(
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(status=WebhookEvent.Status.PENDING)
                .order_by("received_at")[:limit]
            )
            event_ids = [event.pk for event in events]
            fresh, suspects, poison = _events_sort_by_claims(event_ids)
            webhook_events_quarantine(poison)
            events = [event for event in events if event.pk in set(fresh)]
            if events:
                claims_add(fresh)
                webhook_events_apply(events)
        claims_forget(fresh + list(poison))
    except (OperationalError, InterfaceError, BrokerError) as exc:
        # The process survived: not a poison body, so the claim does not count.
        claims_forget(fresh)
        raise RetryableJobError(f"webhook batch: {exc!r}") from exc
    except Exception:
        claims_forget(fresh)  # narrowed down one by one below, counted there
        logger.exception(
            "Webhook batch of %d failed; processing its events one by one",
            len(fresh),
        )
        suspects = fresh + suspects
    # Claimed before and never finished (their worker died): one by one, so a
    # poison body takes nobody down with it.
    for event_id in suspects:
        try:
            webhook_event_process(event_id=event_id)
        except RetryableJobError:
            raise
        except Exception:  # marked failed, with the error, by the call
            pass
    return len(event_ids)


def _events_sort_by_claims(
    event_ids: list[int],
) -> tuple[list[int], list[int], dict[int, int]]:
    """(never claimed, claimed before and not finished, to quarantine)."""
    counts = claims_read(event_ids)
    limit = settings.WHATSAPP_WEBHOOK_MAX_CLAIMS
    poison = {pk: n for pk, n in counts.items() if n >= limit}
    suspects = [pk for pk in event_ids if 0 < counts[pk] < limit]
    fresh = [pk for pk in event_ids if counts[pk] == 0]
    return fresh, suspects, poison


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
            claims = claims_read([event_id])[event_id]
            if claims >= settings.WHATSAPP_WEBHOOK_MAX_CLAIMS:
                webhook_events_quarantine({event_id: claims})
            else:
                claims_add([event_id])
                webhook_events_apply([event], raise_errors=True)
        claims_forget([event_id])
        return event
    except RetryableJobError:
        raise
    except (OperationalError, InterfaceError, BrokerError) as exc:
        # The database or the broker (fanning statuses out) is away: the
        # transaction rolled back, so the event is still pending; retry. The
        # process survived, so the claim does not count towards quarantine.
        claims_forget([event_id])
        raise RetryableJobError(f"webhook event {event_id}: {exc!r}") from exc
    except Exception as exc:
        logger.exception("Webhook event %s failed", event_id)
        claims_forget([event_id])
        WebhookEvent.objects.filter(
            pk=event_id, status=WebhookEvent.Status.PENDING
        ).update(
            status=WebhookEvent.Status.FAILED,
            attempts=F("attempts") + 1,
            last_error=repr(exc)[:4000],
        )
        raise
