"""Poison bodies cannot stall the drain (issue 17).

An event whose processing kills the worker (an exit, an out-of-memory kill,
not an exception) rolls its batch's transaction back with it, attempts and
all, so counting attempts in the database cannot see it. Claims are counted
on the broker's Redis instead (``whatsapp:webhook:claims``: event id -> drains
that took it and did not finish), incremented before the batch's work starts
and forgotten once its outcome is committed; a crash cannot roll them back.

messaging/inbox.py uses the counts this way: an event claimed before and
never finished is a suspect and is applied on its own, outside the batch, so
its batch-mates go through; one claimed ``WHATSAPP_WEBHOOK_MAX_CLAIMS`` times
is quarantined with its reason (the queue page lists it; an operator can
re-drive it). When the broker's Redis does not answer, counting fails open:
the drain goes on without the protection rather than stopping.
"""

import logging
import os

from django.db.models import F

from messaging.models import WebhookEvent
from queues.keys import WEBHOOK_CLAIMS_KEY
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

#: TEST ONLY. A worker started with this variable set exits hard (``os._exit``,
#: no cleanup, as an out-of-memory kill would) when it applies a body that
#: contains its value. Never set it in production; it exists for
#: tests/reliability/test_webhook_poison.py.
_TEST_CRASH_MARKER = os.environ.get("WEBHOOK_TEST_CRASH_MARKER", "")


def test_crash_hook(events: list[WebhookEvent]) -> None:
    """TEST ONLY (see _TEST_CRASH_MARKER): a no-op unless the variable is set."""
    if _TEST_CRASH_MARKER and any(_TEST_CRASH_MARKER in e.body for e in events):
        logger.critical("Test crash marker found in a webhook body: exiting hard")
        os._exit(70)


def claims_read(ids: list[int]) -> dict[int, int]:
    """How many drains claimed each event and did not finish it."""
    if not ids:
        return {}
    try:
        values = queue_redis().hmget(WEBHOOK_CLAIMS_KEY, ids)
    except Exception as exc:  # redis-py's errors: fail open
        logger.warning("Webhook claims not read (%r): no poison check", exc)
        return dict.fromkeys(ids, 0)
    return {pk: int(v or 0) for pk, v in zip(ids, values, strict=True)}


def claims_add(ids: list[int]) -> None:
    """Count a claim of each event, before any work on them starts."""
    if not ids:
        return
    try:
        pipe = queue_redis().pipeline(transaction=False)
        for pk in ids:
            pipe.hincrby(WEBHOOK_CLAIMS_KEY, pk, 1)
        pipe.execute()
    except Exception as exc:
        logger.warning("Webhook claims not counted (%r)", exc)


def claims_forget(ids: list[int]) -> None:
    """The events' outcomes are committed: their claims no longer matter."""
    if not ids:
        return
    try:
        queue_redis().hdel(WEBHOOK_CLAIMS_KEY, *ids)
    except Exception as exc:
        logger.debug("Webhook claims not forgotten: %r", exc)


def quarantine_reason(claims: int) -> str:
    return (
        f"quarantined: claimed by {claims} drains that never finished it "
        "(the worker died while applying this body: an exit or an out-of-memory "
        "kill); re-drive it from the queue page once the cause is fixed"
    )


def webhook_events_quarantine(counts: dict[int, int]) -> None:
    """In the caller's transaction: set these pending events aside."""
    for pk, claims in counts.items():
        logger.error("Webhook event %s quarantined after %d claims", pk, claims)
        WebhookEvent.objects.filter(pk=pk, status=WebhookEvent.Status.PENDING).update(
            status=WebhookEvent.Status.QUARANTINED,
            attempts=F("attempts") + 1,
            last_error=quarantine_reason(claims),
        )


def webhook_events_quarantined(*, limit: int = 50) -> list[WebhookEvent]:
    """The quarantined events, newest first (the queue page)."""
    return list(
        WebhookEvent.objects.filter(status=WebhookEvent.Status.QUARANTINED)
        .defer("body")
        .order_by("-received_at")[:limit]
    )
