"""Claims counted outside the batch (issue 17), without crashing anything:
the counts a dead worker would have left behind are written directly, and
the drain's answer to them is checked. tests/reliability/test_webhook_poison.py
kills a real worker."""

import json

import pytest

from messaging import inbox
from messaging.models import Message, WebhookEvent
from queues.keys import WEBHOOK_CLAIMS_KEY
from saas.redis import queue_redis
from tests.messaging.conftest import text_body

pytestmark = pytest.mark.django_db


def receive(wamid: str) -> WebhookEvent:
    return inbox.webhook_event_receive(body=json.dumps(text_body(wamid)))


def claims(event: WebhookEvent) -> int:
    return int(queue_redis().hget(WEBHOOK_CLAIMS_KEY, event.pk) or 0)


def test_a_batch_counts_its_claims_and_forgets_them_once_committed(salon):
    events = [receive(f"wamid.C{n}") for n in range(5)]
    seen: list[int] = []
    apply = inbox.webhook_events_apply

    def spy(batch, **kwargs):
        seen.extend(claims(event) for event in batch)  # counted before any work
        return apply(batch, **kwargs)

    inbox.webhook_events_apply = spy
    try:
        assert inbox.webhook_events_process_batch(limit=10) == 5
    finally:
        inbox.webhook_events_apply = apply
    assert seen == [1] * 5
    assert [claims(event) for event in events] == [0] * 5
    assert Message.objects.count() == 5


def test_an_event_claimed_before_is_applied_alone_and_the_batch_goes_on(salon):
    first = receive("wamid.FIRST")
    suspect = receive("wamid.SUSPECT")
    last = receive("wamid.LAST")
    queue_redis().hset(WEBHOOK_CLAIMS_KEY, suspect.pk, 1)  # a drain died on it

    batches: list[list[int]] = []
    apply = inbox.webhook_events_apply

    def spy(batch, **kwargs):
        batches.append([event.pk for event in batch])
        return apply(batch, **kwargs)

    inbox.webhook_events_apply = spy
    try:
        assert inbox.webhook_events_process_batch(limit=10) == 3
    finally:
        inbox.webhook_events_apply = apply
    assert batches == [[first.pk, last.pk], [suspect.pk]]
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}
    assert claims(suspect) == 0


def test_an_event_claimed_max_claims_times_is_quarantined_unapplied(salon, settings):
    settings.WHATSAPP_WEBHOOK_MAX_CLAIMS = 3
    good = receive("wamid.GOOD")
    poison = receive("wamid.POISON")
    queue_redis().hset(WEBHOOK_CLAIMS_KEY, poison.pk, 3)

    assert inbox.webhook_events_process_batch(limit=10) == 2
    poison.refresh_from_db()
    good.refresh_from_db()
    assert (good.status, poison.status) == ("processed", "quarantined")
    assert "claimed by 3 drains that never finished it" in poison.last_error
    assert list(Message.objects.values_list("wamid", flat=True)) == ["wamid.GOOD"]
    assert claims(poison) == 0

    # An operator re-drives it: pending again, counted from zero.
    assert inbox.webhook_event_release(event_id=poison.pk) is True
    assert inbox.webhook_event_release(event_id=poison.pk) is False
    poison.refresh_from_db()
    assert poison.status == "pending"
    assert inbox.webhook_events_process_batch(limit=10) == 1
    assert Message.objects.filter(wamid="wamid.POISON").exists()


def test_claims_fail_open_when_the_broker_is_away(salon, settings):
    """No Redis to count on: the drain still applies the batch."""
    from saas.redis import queue_redis as client_factory

    receive("wamid.OPEN")
    settings.REDIS_QUEUE_URL = "redis://127.0.0.1:1/0"
    client_factory.cache_clear()
    try:
        assert inbox.webhook_events_process_batch(limit=10) == 1
    finally:
        client_factory.cache_clear()
    assert Message.objects.filter(wamid="wamid.OPEN").exists()


def test_the_linger_grows_with_how_full_the_last_batch_was():
    assert inbox.drain_linger(0, 100, 0.005, 0.05) == 0.005
    assert inbox.drain_linger(50, 100, 0.005, 0.05) == pytest.approx(0.0275)
    assert inbox.drain_linger(100, 100, 0.005, 0.05) == 0.05
    assert inbox.drain_linger(3, 100, 0.05, 0.05) == 0.05  # fixed when min == max
