"""The inbox's drain: one job per burst, batches with a constant number of
queries, nothing left behind, and a bad event failing alone."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from messaging import inbox
from messaging.models import Conversation, Message, WebhookEvent
from queues.keys import PRIORITY_SEP
from saas.redis import queue_redis
from tests.factories import SalonFactory
from tests.messaging.conftest import text_body, webhook_envelope

pytestmark = pytest.mark.django_db

WEBHOOK_QUEUE = f"whatsapp:webhook{PRIORITY_SEP}5"


def receive(body: dict) -> WebhookEvent:
    return inbox.webhook_event_receive(body=json.dumps(body))


def drain(batch_size: int = 100) -> int:
    return inbox.webhook_events_drain(batch_size=batch_size, time_budget=60)


def queued_tasks() -> list[str]:
    return [
        json.loads(raw)["headers"]["task"]
        for raw in queue_redis().lrange(WEBHOOK_QUEUE, 0, -1)
    ]


def test_a_burst_of_webhooks_queues_one_drain_job(
    salon, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(20):
            receive(text_body(f"wamid.BURST{n}"))
    assert queued_tasks() == ["messaging.webhook_events_drain"]
    assert queue_redis().ttl(inbox.DRAIN_FLAG_KEY) > 0


def test_drain_applies_every_pending_event_and_clears_the_flag(salon):
    for n in range(25):
        receive(text_body(f"wamid.D{n}", wa_id=f"1650555{n % 7:04d}"))
    receive(text_body("wamid.D3", wa_id="16505550003"))  # Meta's duplicate
    queue_redis().set(inbox.DRAIN_FLAG_KEY, "queued")

    assert drain(batch_size=10) == 26
    assert not WebhookEvent.objects.exclude(status="processed").exists()
    assert set(WebhookEvent.objects.values_list("attempts", flat=True)) == {1}
    assert Message.objects.count() == 25 and Conversation.objects.count() == 7
    assert not queue_redis().exists(inbox.DRAIN_FLAG_KEY)


def test_a_batch_costs_the_same_queries_whatever_its_size(salon):
    def queries_for(count: int, prefix: str) -> int:
        for n in range(count):
            receive(text_body(f"wamid.{prefix}{n}", wa_id=f"1{prefix}{n:04d}"))
        with CaptureQueriesContext(connection) as queries:
            assert inbox.webhook_events_process_batch(limit=100) == count
        return len(queries)

    assert queries_for(1, "44") == queries_for(30, "55")
    assert Message.objects.count() == 31


def test_an_event_stored_just_before_the_flag_is_cleared_is_drained(salon, monkeypatch):
    """The race the re-check closes: a webhook finds the flag still set (so it
    queues nothing) after the drain's last claim came back empty."""
    clear = inbox._drain_flag_clear
    late: list[WebhookEvent] = []

    def store_one_then_clear() -> None:
        if not late:
            late.append(receive(text_body("wamid.LATE")))
            inbox.webhook_drain_kick()  # the flag is set: nothing queued
        clear()

    monkeypatch.setattr(inbox, "_drain_flag_clear", store_one_then_clear)
    receive(text_body("wamid.FIRST"))
    queue_redis().set(inbox.DRAIN_FLAG_KEY, "queued")

    assert drain() == 2
    assert queued_tasks() == []
    late[0].refresh_from_db()
    assert late[0].status == WebhookEvent.Status.PROCESSED
    assert Message.objects.filter(wamid="wamid.LATE").exists()


def test_an_unreadable_body_fails_alone(salon):
    good = receive(text_body("wamid.GOOD"))
    bad = WebhookEvent.objects.create(received_at=good.received_at, body="{not json")

    assert inbox.webhook_events_process_batch(limit=10) == 2
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.status, bad.status) == ("processed", "failed")
    assert "not JSON" in bad.last_error and bad.processed_at is None
    assert Message.objects.get().wamid == "wamid.GOOD"


def test_a_value_the_database_refuses_fails_only_its_own_event(salon):
    """A 300-character wamid breaks the batch's INSERT; the batch is retried
    event by event, so only that event fails."""
    receive(text_body("wamid.OK1"))
    too_long = receive(text_body("wamid." + "X" * 300))
    receive(text_body("wamid.OK2", wa_id="16505559999"))

    assert inbox.webhook_events_process_batch(limit=10) == 3
    statuses = dict(WebhookEvent.objects.values_list("pk", "status"))
    assert statuses.pop(too_long.pk) == "failed"
    assert set(statuses.values()) == {"processed"}
    assert set(Message.objects.values_list("wamid", flat=True)) == {
        "wamid.OK1",
        "wamid.OK2",
    }


def test_a_reply_links_to_a_message_of_the_same_batch_in_the_same_salon(salon):
    other = SalonFactory(whatsapp_phone_number_id="999000999000999")
    receive(text_body("wamid.QUOTED"))
    reply = text_body("wamid.REPLY")
    reply["entry"][0]["changes"][0]["value"]["messages"][0]["context"] = {
        "from": "15550783881",
        "id": "wamid.QUOTED",
    }
    receive(reply)
    foreign = webhook_envelope(reply["entry"][0]["changes"][0]["value"])
    value = foreign["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = other.whatsapp_phone_number_id
    value["messages"][0]["id"] = "wamid.FOREIGN_REPLY"
    receive(foreign)

    assert inbox.webhook_events_process_batch(limit=10) == 3
    quoted = Message.objects.get(wamid="wamid.QUOTED")
    assert Message.objects.get(wamid="wamid.REPLY").reply_to == quoted
    # Another tenant's message quoting our wamid is not linked to it.
    assert Message.objects.get(wamid="wamid.FOREIGN_REPLY").reply_to is None


def test_redrive_queues_a_drain_for_old_pending_events(salon):
    from datetime import timedelta

    event = receive(text_body("wamid.OLD"))
    assert inbox.webhook_events_redrive(older_than=timedelta(0)) == [event.pk]
    assert queued_tasks() == ["messaging.webhook_events_drain"]


def test_a_paused_queue_stops_the_drain_and_leaves_a_job_for_the_resume(salon):
    from queues.keys import PAUSED_KEY

    for n in range(3):
        receive(text_body(f"wamid.P{n}"))
    queue_redis().sadd(PAUSED_KEY, "whatsapp:webhook")
    assert drain() == 0
    assert WebhookEvent.objects.filter(status="pending").count() == 3
    assert queued_tasks() == ["messaging.webhook_events_drain"]

    queue_redis().srem(PAUSED_KEY, "whatsapp:webhook")
    assert drain() == 3
