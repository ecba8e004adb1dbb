"""Delivery statuses again after the broker's Redis changed
(messaging/status_redrive.py): a status job that went with a failed-over
primary, together with its record, comes back from the webhook inbox."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import Message, WebhookEvent
from messaging.status_redrive import WATCHER, statuses_redrive_after_broker_switch
from queues.broker_identity import broker_switched
from queues.definitions import MESSAGE_STATUS
from queues.keys import broker_lists, broker_seen_key
from saas.redis import queue_redis
from tests.messaging.conftest import OUTBOUND_WAMIDS, status_body, text_body
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def server_now() -> float:
    seconds, micros = queue_redis().time()
    return seconds + micros / 1e6


def the_old_primary_was_seen(at: float) -> None:
    """The mark a watcher left on the instance before the failover, as the
    promoted replica holds it: another run_id."""
    queue_redis().hset(
        broker_seen_key(WATCHER), mapping={"run_id": "0" * 40, "at": repr(at)}
    )


def processed_event(body: dict, *, ago: timedelta) -> WebhookEvent:
    at = timezone.now() - ago
    return WebhookEvent.objects.create(
        received_at=at,
        body=json.dumps(body),
        status=WebhookEvent.Status.PROCESSED,
        processed_at=at,
    )


def status_jobs() -> list[dict]:
    client = queue_redis()
    return [
        json.loads(raw)
        for key in broker_lists(MESSAGE_STATUS.name)
        for raw in client.lrange(key, 0, -1)
    ]


def test_the_same_instance_is_no_switch_and_another_one_is():
    queue_redis().delete(broker_seen_key("w"))
    assert broker_switched("w") == (True, None)  # never looked before
    assert broker_switched("w") == (False, None)
    queue_redis().hset(broker_seen_key("w"), mapping={"run_id": "x", "at": "12.5"})
    assert broker_switched("w") == (True, 12.5)
    assert broker_switched("w") == (False, None)


def test_after_a_failover_the_statuses_of_recent_events_are_applied_again(
    outbound, start_worker
):
    wamid, _ = OUTBOUND_WAMIDS["reminder_to_maria"]
    other, _ = OUTBOUND_WAMIDS["text_to_tom"]
    # Processed 5 s before the last look at the old primary; its status job
    # went with it (nothing in the broker, no record).
    processed_event(status_body(wamid, ("read", 1781000100)), ago=timedelta(seconds=5))
    # Long before: its job ran then, it is not published again.
    processed_event(status_body(other, ("read", 1781000000)), ago=timedelta(hours=1))
    # An inbound message is not stored twice: only statuses are published.
    processed_event(text_body("wamid.INBOUND1"), ago=timedelta(seconds=2))
    the_old_primary_was_seen(server_now())

    assert statuses_redrive_after_broker_switch() == 1
    (job,) = status_jobs()
    assert job["headers"]["task"] == "messaging.message_statuses_apply"
    assert statuses_redrive_after_broker_switch() == 0  # seen now: no switch

    start_worker(MESSAGE_STATUS.name)
    wait_until(
        lambda: Message.objects.get(wamid=wamid).status == Message.Status.READ,
        timeout=60,
    )
    assert Message.objects.get(wamid=other).status == Message.Status.SENT
    assert not Message.objects.filter(wamid="wamid.INBOUND1").exists()


def test_a_lost_mark_goes_back_a_bounded_window(outbound):
    wamid, _ = OUTBOUND_WAMIDS["reminder_to_maria"]
    processed_event(status_body(wamid, ("read", 1781000100)), ago=timedelta(minutes=1))
    processed_event(status_body(wamid, ("read", 1781000100)), ago=timedelta(hours=2))
    queue_redis().delete(broker_seen_key(WATCHER))  # went with the old instance
    assert statuses_redrive_after_broker_switch() == 1
