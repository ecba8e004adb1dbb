"""SIGKILL the webhook worker with 1,000 events in flight: 0 lost, 0 duplicated."""

import signal
import time

import pytest
from django.test import Client

from messaging.models import Message, WebhookEvent
from saas.redis import queue_redis
from tests.messaging.conftest import post_webhook, text_body
from tests.utils import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(600),
]

EVENTS = 1000
VISIBILITY_TIMEOUT = 5


def processed() -> int:
    return WebhookEvent.objects.filter(status=WebhookEvent.Status.PROCESSED).count()


def unacked_deliveries() -> dict[str, float]:
    """kombu's record of delivered-but-unacknowledged messages: tag -> time."""
    return {
        tag: score
        for tag, score in queue_redis().zrange("unacked_index", 0, -1, withscores=True)
    }


def test_killed_worker_loses_and_duplicates_nothing(salon, start_worker):
    client = Client()
    wamids = [f"wamid.CRASH{n:05d}" for n in range(EVENTS)]
    for n, wamid in enumerate(wamids):
        body = text_body(wamid, wa_id=f"1650555{n % 50:04d}", text=f"m{n}")
        assert post_webhook(client, body).status_code == 200
    assert WebhookEvent.objects.filter(status="pending").count() == EVENTS

    env = {"CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT)}
    worker = start_worker("whatsapp:webhook", concurrency=4, env=env)
    wait_until(lambda: processed() >= 50, timeout=60, message="worker under way")
    worker.kill(signal.SIGKILL)
    worker.proc.wait(timeout=10)

    in_flight = unacked_deliveries()
    done_at_kill = processed()
    assert in_flight, "the worker held no unacknowledged job when it was killed"
    assert done_at_kill < EVENTS

    # The killed worker's jobs come back once they are older than the
    # visibility timeout; the new worker sweeps for them as it starts.
    newest = max(in_flight.values())
    wait_until(
        lambda: time.time() > newest + VISIBILITY_TIMEOUT + 0.5,
        timeout=VISIBILITY_TIMEOUT + 5,
        message="in-flight jobs past the visibility timeout",
    )
    restarted = start_worker(
        "whatsapp:webhook", concurrency=4, env=env, name="restarted"
    )
    try:
        wait_until(lambda: processed() == EVENTS, timeout=400, message="all processed")
    except AssertionError as exc:
        broker = queue_redis()
        raise AssertionError(
            f"{exc}; at kill: {done_at_kill} processed, {len(in_flight)} in flight; "
            f"now: {processed()} processed, "
            f"{WebhookEvent.objects.filter(status='pending').count()} pending, "
            f"{broker.zcard('unacked_index')} unacked, "
            f"queued {[broker.llen(k) for k in broker.keys('whatsapp:webhook*')]}"
            f"\n{restarted.log()[-3000:]}"
        ) from None

    assert Message.objects.count() == EVENTS
    assert set(Message.objects.values_list("wamid", flat=True)) == set(wamids)
    # Each event was applied exactly once (a rolled-back run does not count).
    assert set(WebhookEvent.objects.values_list("attempts", flat=True)) == {1}
    wait_until(lambda: not unacked_deliveries(), timeout=30, message="all acked")
