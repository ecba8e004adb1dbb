"""Applying webhook events, in the caller's transaction: store what their
bodies carry (messaging/inbox_storage.py), mark each event with its outcome,
and fan their statuses out to ``whatsapp:message-status``. The drain protocol
around it is messaging/inbox.py."""

import json
import logging
from collections import defaultdict

from django.db.models import F
from django.utils import timezone

from messaging.inbox_claims import test_crash_hook
from messaging.inbox_reading import Outcome, payload_walk, salons_by_number
from messaging.inbox_storage import Inbound
from messaging.models import WebhookEvent
from messaging.services import MESSAGE_STATUSES_APPLY_TASK
from queues.definitions import MESSAGE_STATUS
from queues.publish import job_publish

logger = logging.getLogger(__name__)

#: Statuses applied per message-status job: a 10,000-status body becomes 100
#: small jobs, never one huge one.
STATUS_BATCH_SIZE = 100


def webhook_events_apply(
    events: list[WebhookEvent], *, raise_errors: bool = False
) -> None:
    """In the caller's transaction: store what the events' bodies carry, mark
    each event, and fan their statuses out.

    An event whose body cannot be read is marked failed on its own (or, with
    ``raise_errors``, raises), without touching the others.
    """
    test_crash_hook(events)  # TEST ONLY: a no-op unless its variable is set
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
        message_statuses_enqueue(salon_id, salon_statuses)


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


def message_statuses_enqueue(salon_id: str, statuses: list[dict]) -> None:
    """A salon's statuses on ``whatsapp:message-status``, STATUS_BATCH_SIZE a job."""
    for start in range(0, len(statuses), STATUS_BATCH_SIZE):
        job_publish(
            MESSAGE_STATUSES_APPLY_TASK,
            queue=MESSAGE_STATUS,
            kwargs={
                "salon_id": salon_id,
                "statuses": statuses[start : start + STATUS_BATCH_SIZE],
            },
        )
