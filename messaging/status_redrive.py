"""Delivery statuses again after the broker's Redis changed.

A webhook event is marked processed in the transaction that hands its
statuses to ``whatsapp:message-status``. The job records and the lost-job
sweep (queues/lost_jobs.py) bring back a status job a dying worker lost, but
not one that went with a failed-over primary together with its record
(replication is asynchronous). The webhook inbox still holds the bodies: after
the broker's instance changed (queues/broker_identity.py), the statuses of the
events processed since shortly before the last look at the old instance are
published again. Statuses apply idempotently and in any order (a status
never moves a message back), so applying some twice changes nothing.

Beat runs it every minute; it costs one INFO and two small writes when
nothing changed.
"""

import json
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from messaging.inbox_apply import message_statuses_enqueue
from messaging.inbox_reading import payload_statuses, salons_by_number
from messaging.models import WebhookEvent
from queues.broker_identity import broker_switched

logger = logging.getLogger(__name__)

STATUSES_REDRIVE_TASK = "messaging.statuses_redrive_after_broker_switch"
WATCHER = "whatsapp-statuses"
#: Before the last look at the old instance: what its replica may not have had.
LAG_MARGIN = timedelta(seconds=30)
#: With no last look to go by (the mark went with the old instance, or this
#: is the first look): this far back.
UNKNOWN_WINDOW = timedelta(minutes=3)
CHUNK = 500


def statuses_redrive_after_broker_switch() -> int:
    """Publish again the statuses of the events processed since shortly before
    the broker's instance changed; returns how many statuses (0: no change)."""
    switched, seen_at = broker_switched(WATCHER)
    if not switched:
        return 0
    since = (
        datetime.fromtimestamp(seen_at, tz=UTC) - LAG_MARGIN
        if seen_at is not None
        else timezone.now() - UNKNOWN_WINDOW
    )
    events = (
        WebhookEvent.objects.filter(
            status=WebhookEvent.Status.PROCESSED, processed_at__gte=since
        )
        .order_by("pk")
        .values_list("body", flat=True)
    )
    published = 0
    chunk: list = []
    for body in events.iterator(chunk_size=CHUNK):
        try:
            chunk.append(json.loads(body))
        except ValueError:
            continue
        if len(chunk) >= CHUNK:
            published += _publish(chunk)
            chunk = []
    published += _publish(chunk)
    logger.warning(
        "The broker's Redis changed: %d statuses of events processed since %s "
        "published again",
        published,
        since.isoformat(),
    )
    return published


def _publish(payloads: list) -> int:
    if not payloads:
        return 0
    salons = salons_by_number(payloads)
    by_salon: dict[str, list[dict]] = defaultdict(list)
    for payload in payloads:
        for salon_id, statuses in payload_statuses(payload, salons).items():
            by_salon[salon_id].extend(statuses)
    for salon_id, statuses in by_salon.items():
        message_statuses_enqueue(salon_id, statuses)
    return sum(len(statuses) for statuses in by_salon.values())
