"""The rules of ingestion, statuses and outbound sends, tested on the services."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from messaging import inbox, outbound, services
from messaging.models import Conversation, Message, OrphanStatus, WebhookEvent
from messaging.signals import messages_changed
from tests.factories import ConversationFactory, MessageFactory
from tests.messaging.conftest import (
    OUTBOUND_WAMIDS,
    fixture_bytes,
    status_body,
    text_body,
)

pytestmark = pytest.mark.django_db


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


def ingest(body: bytes | dict) -> WebhookEvent:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    event = inbox.webhook_event_receive(body=body.decode())
    inbox.webhook_event_process(event_id=event.pk)
    event.refresh_from_db()
    return event


def test_received_event_is_stored_pending_with_its_exact_body(salon):
    raw = fixture_bytes("01_text_inbound.json")
    event = inbox.webhook_event_receive(body=raw.decode())
    event.refresh_from_db()
    assert event.status == WebhookEvent.Status.PENDING
    assert event.body.encode() == raw and event.attempts == 0


def test_text_message_creates_conversation_with_name_and_bsuid(salon):
    event = ingest(fixture_bytes("01_text_inbound.json"))
    assert event.status == WebhookEvent.Status.PROCESSED
    message = Message.objects.get()
    assert message.body == "Hi! Can I book a haircut for Saturday morning?"
    assert message.direction == "in" and message.status == "received"
    assert message.created_at == at(1781000000)
    conversation = message.conversation
    assert (conversation.customer_wa_id, conversation.customer_name) == (
        "16505551234",
        "Maria Gomez",
    )
    assert conversation.customer_user_id == "US.13491208655302741918"
    assert (
        conversation.last_message_at == conversation.last_inbound_at == at(1781000000)
    )


def test_batch_stores_every_message_of_every_sender(salon):
    ingest(fixture_bytes("04_batch_three_messages_two_customers.json"))
    by_sender = {
        c.customer_wa_id: [m.body for m in c.messages.order_by("created_at")]
        for c in Conversation.objects.all()
    }
    assert by_sender == {
        "16505551234": [
            "Also, do you do beard trims?",
            "For my partner, same day if possible",
        ],
        "16505550142": ["Hello, is there anything free tomorrow after 5pm?"],
    }
    maria = Conversation.objects.get(customer_wa_id="16505551234")
    assert maria.last_message_at == at(1781000903)


def test_same_body_twice_stores_one_message(salon):
    raw = fixture_bytes("01_text_inbound.json")
    first, second = ingest(raw), ingest(raw)
    assert first.status == second.status == WebhookEvent.Status.PROCESSED
    assert Message.objects.count() == 1 and Conversation.objects.count() == 1


def test_processing_an_event_again_is_a_no_op(salon):
    event = ingest(fixture_bytes("01_text_inbound.json"))
    assert inbox.webhook_event_process(event_id=event.pk) is None
    event.refresh_from_db()
    assert event.attempts == 1 and Message.objects.count() == 1


def test_last_message_at_never_moves_back(salon):
    ingest(text_body("wamid.new", at=1781005000))
    ingest(text_body("wamid.old", at=1781000000))
    conversation = Conversation.objects.get()
    assert conversation.last_message_at == at(1781005000)
    assert conversation.last_inbound_at == at(1781005000)
    assert conversation.messages.count() == 2


def test_unknown_phone_number_id_is_ignored_with_reason(salon, caplog):
    event = ingest(fixture_bytes("10_unknown_phone_number_id.json"))
    assert event.status == WebhookEvent.Status.IGNORED
    assert "109876543210987" in event.last_error
    assert "unknown phone_number_id" in caplog.text
    assert not Message.objects.exists() and not Conversation.objects.exists()


def test_value_level_errors_are_logged_and_processed(salon, caplog):
    event = ingest(fixture_bytes("16_value_level_errors.json"))
    assert event.status == WebhookEvent.Status.PROCESSED
    assert "131000" in event.last_error and "131000" in caplog.text
    assert not Message.objects.exists()


def test_malformed_items_are_skipped_and_the_rest_stored(salon):
    body = text_body("wamid.good")
    value = body["entry"][0]["changes"][0]["value"]
    value["messages"].insert(0, {"type": "text", "text": {"body": "no id"}})
    value["statuses"] = [{"id": "wamid.x", "status": "exploded"}, "junk"]
    event = ingest(body)
    assert event.status == WebhookEvent.Status.PROCESSED
    assert "without id or from" in event.last_error
    assert "skipped status 'exploded'" in event.last_error
    assert list(Message.objects.values_list("wamid", flat=True)) == ["wamid.good"]


def test_body_without_entries_is_processed_with_a_note(salon):
    event = ingest({"object": "whatsapp_business_account"})
    assert event.status == WebhookEvent.Status.PROCESSED
    assert "no entry" in event.last_error


def test_reply_and_reaction_link_to_the_messages_they_name(salon, outbound):
    ingest(fixture_bytes("03_interactive_button_reply_inbound.json"))
    ingest(fixture_bytes("11_reaction_inbound.json"))
    reply = Message.objects.get(type="interactive")
    assert reply.reply_to == outbound["buttons_to_priya"]
    assert reply.content["id"] == "appt_8841_confirm"
    reaction = Message.objects.get(type="reaction")
    assert reaction.reaction_to == outbound["reminder_to_maria"]
    assert reaction.content["emoji"] == "\U0001f44d" and not reaction.content["removed"]


def test_reply_to_an_unknown_message_keeps_the_quoted_id(salon):
    ingest(fixture_bytes("03_interactive_button_reply_inbound.json"))
    reply = Message.objects.get()
    assert reply.reply_to is None
    assert reply.content["context"]["id"] == OUTBOUND_WAMIDS["buttons_to_priya"][0]


def test_ingestion_announces_changed_conversations_after_commit(salon):
    received = []

    def listener(sender, salon_id, conversation_ids, **kwargs):
        received.append((salon_id, list(conversation_ids)))

    messages_changed.connect(listener)
    try:
        with pytest.raises(RuntimeError):
            from django.db import transaction

            with transaction.atomic():
                ingest(fixture_bytes("01_text_inbound.json"))
                assert received == []  # not before commit
                raise RuntimeError("rollback")
        assert received == [] and not Message.objects.exists()
    finally:
        messages_changed.disconnect(listener)


# --- statuses -----------------------------------------------------------------


def statuses_of(body: dict) -> list[dict]:
    return body["entry"][0]["changes"][0]["value"]["statuses"]


@pytest.fixture
def sent(outbound) -> Message:
    return outbound["reminder_to_maria"]


def apply(message: Message, *statuses) -> list[dict]:
    body = status_body(message.wamid, *statuses)
    return services.message_statuses_apply(
        salon_id=message.salon_id, statuses=statuses_of(body)
    )


def test_statuses_in_reverse_order_end_read_with_every_timestamp(sent):
    sent.status = Message.Status.QUEUED
    sent.save()
    apply(sent, ("read", 1781001500), ("delivered", 1781001203), ("sent", 1781001200))
    sent.refresh_from_db()
    assert sent.status == "read"
    assert (sent.sent_at, sent.delivered_at, sent.read_at) == (
        at(1781001200),
        at(1781001203),
        at(1781001500),
    )


def test_a_repeated_status_keeps_its_first_timestamp(sent):
    apply(sent, ("delivered", 1781001203))
    apply(sent, ("delivered", 1781009999))
    sent.refresh_from_db()
    assert sent.status == "delivered" and sent.delivered_at == at(1781001203)


def test_failed_records_the_error_while_not_delivered(outbound):
    message = outbound["text_to_tom"]
    body = json.loads(fixture_bytes("08_status_failed_with_errors.json"))
    services.message_statuses_apply(
        salon_id=message.salon_id, statuses=statuses_of(body)
    )
    message.refresh_from_db()
    assert message.status == "failed" and message.failed_at == at(1781001800)
    assert message.error["code"] == 131047
    assert message.error["title"] == "Re-engagement message"
    assert "24 hours" in message.error["details"]


def test_failed_after_delivered_or_read_does_not_apply(sent):
    apply(sent, ("delivered", 1781001203))
    apply(sent, ("failed", 1781001300))
    sent.refresh_from_db()
    assert sent.status == "delivered" and sent.error is None
    assert sent.failed_at == at(1781001300)  # its own timestamp is still kept


def test_delivered_after_failed_wins(sent):
    apply(sent, ("failed", 1781001300))
    apply(sent, ("delivered", 1781001203))
    sent.refresh_from_db()
    assert sent.status == "delivered"


def test_unknown_wamid_is_returned_not_invented(salon):
    missing = services.message_statuses_apply(
        salon_id=salon.pk, statuses=statuses_of(status_body("wamid.nope", ("read", 1)))
    )
    assert [s["id"] for s in missing] == ["wamid.nope"]
    assert not Message.objects.exists()


def test_another_salons_wamid_is_not_touched(sent):
    from tests.factories import SalonFactory

    other = SalonFactory()
    missing = services.message_statuses_apply(
        salon_id=other.pk, statuses=statuses_of(status_body(sent.wamid, ("read", 1)))
    )
    sent.refresh_from_db()
    assert len(missing) == 1 and sent.status == "sent"


def test_orphans_are_kept_once_and_adopted_by_the_message_later(salon, settings):
    statuses = statuses_of(status_body("wamid.later", ("delivered", 1781001203)))
    services.orphan_statuses_store(salon_id=salon.pk, statuses=statuses)
    services.orphan_statuses_store(salon_id=salon.pk, statuses=statuses)
    assert OrphanStatus.objects.count() == 1 and not Message.objects.exists()

    class Fixed:
        def send_text(self, **kwargs):
            return outbound.SendResult(wamid="wamid.later")

    conversation = ConversationFactory(salon=salon, last_inbound_at=timezone.now())
    message = outbound.message_send_text(conversation=conversation, text="Hello")
    outbound.whatsapp_client = lambda: Fixed()  # restored below
    try:
        outbound.message_outbound_deliver(message_id=message.pk, final_attempt=False)
    finally:
        from messaging.whatsapp import whatsapp_client

        outbound.whatsapp_client = whatsapp_client
    message.refresh_from_db()
    assert message.wamid == "wamid.later" and message.status == "delivered"
    assert message.delivered_at == at(1781001203)
    assert not OrphanStatus.objects.exists()


# --- re-drive -----------------------------------------------------------------


def test_redrive_takes_old_pending_events_once_per_threshold(salon):
    old = inbox.webhook_event_receive(body="{}")
    recent = inbox.webhook_event_receive(body="{}")
    done = inbox.webhook_event_receive(body="{}")
    ten_minutes_ago = timezone.now() - timedelta(minutes=10)
    WebhookEvent.objects.filter(pk__in=[old.pk, done.pk]).update(
        received_at=ten_minutes_ago
    )
    WebhookEvent.objects.filter(pk=done.pk).update(status="processed")

    assert inbox.webhook_events_redrive(older_than=timedelta(minutes=5)) == [old.pk]
    assert inbox.webhook_events_redrive(older_than=timedelta(minutes=5)) == []
    # Once the threshold has passed again, the recent one (and only it) goes.
    WebhookEvent.objects.filter(pk=old.pk).update(redriven_at=ten_minutes_ago)
    assert recent.pk in inbox.webhook_events_redrive(older_than=timedelta(0))


# --- outbound -----------------------------------------------------------------


def test_free_text_outside_the_24h_window_is_refused(salon):
    stale = ConversationFactory(
        salon=salon, last_inbound_at=timezone.now() - timedelta(hours=25)
    )
    never = ConversationFactory(salon=salon, last_inbound_at=None)
    for conversation in (stale, never):
        with pytest.raises(ValidationError, match="template"):
            outbound.message_send_text(conversation=conversation, text="Hi")
    assert not Message.objects.exists()


def test_free_text_inside_the_window_is_queued(salon):
    before = timezone.now() - timedelta(hours=2)
    conversation = ConversationFactory(
        salon=salon, last_inbound_at=before, last_message_at=before
    )
    message = outbound.message_send_text(conversation=conversation, text=" Hi ")
    assert (message.status, message.direction, message.body) == ("queued", "out", "Hi")
    conversation.refresh_from_db()
    assert conversation.last_message_at == message.created_at
    assert conversation.last_inbound_at == before


def test_console_backend_sends_and_stores_the_wamid(salon):
    conversation = ConversationFactory(salon=salon, last_inbound_at=timezone.now())
    message = outbound.message_send_text(conversation=conversation, text="Hi")
    outbound.message_outbound_deliver(message_id=message.pk, final_attempt=False)
    message.refresh_from_db()
    assert message.status == "sent" and message.wamid.startswith("wamid.console.")
    outbound.message_outbound_deliver(message_id=message.pk, final_attempt=False)
    assert Message.objects.get(pk=message.pk).wamid == message.wamid


def test_inbound_message_of_an_old_conversation_reopens_the_window(salon):
    ingest(text_body("wamid.now", at=int(timezone.now().timestamp())))
    conversation = Conversation.objects.get()
    message = outbound.message_send_text(conversation=conversation, text="Hi")
    assert message.status == "queued"


def test_message_factory_defaults_still_work(salon):
    assert MessageFactory(conversation__salon=salon).status == "received"


@pytest.mark.django_db(transaction=True)
def test_an_event_held_by_another_job_is_retried_not_dropped(salon):
    """If the job holding the row dies or rolls back, this one must come back."""
    import psycopg

    from queues.definitions import RetryableJobError
    from tests.conftest import test_database_url

    event = inbox.webhook_event_receive(
        body=fixture_bytes("01_text_inbound.json").decode()
    )
    with psycopg.connect(test_database_url()) as holder:
        holder.execute(
            "SELECT id FROM messaging_webhookevent WHERE id = %s FOR UPDATE",
            [event.pk],
        )
        with pytest.raises(RetryableJobError):
            inbox.webhook_event_process(event_id=event.pk)
        holder.rollback()  # the holder died without processing it
    inbox.webhook_event_process(event_id=event.pk)
    event.refresh_from_db()
    assert event.status == WebhookEvent.Status.PROCESSED and event.attempts == 1
