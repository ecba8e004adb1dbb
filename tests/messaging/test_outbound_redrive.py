"""A staff member's reply written during a broker outage: the request does not
fail, the message stays queued, and beat's re-drive sends it later."""

from datetime import timedelta

import pytest
from django.utils import timezone

from messaging import outbound
from messaging.models import Message
from tests.factories import ConversationFactory
from tests.utils import queued_jobs, run_with_broker_away

OUTBOUND_QUEUE = "whatsapp:outbound"

BROKER_AWAY_SCRIPT = """
import sys
import django
django.setup()
import saas.celery
from django.db import transaction
from messaging import outbound
from messaging.models import Conversation
with transaction.atomic():
    message = outbound.message_send_text(
        conversation=Conversation.objects.get(pk=sys.argv[1]), text="See you at 5"
    )
print("queued", message.pk)
"""


@pytest.mark.django_db(transaction=True)
def test_a_reply_during_a_broker_outage_stays_queued_and_is_redriven(
    salon, subprocess_env
):
    conversation = ConversationFactory(salon=salon, last_inbound_at=timezone.now())
    run = run_with_broker_away(
        BROKER_AWAY_SCRIPT, str(conversation.pk), env=subprocess_env
    )
    assert run.returncode == 0 and "queued" in run.stdout, run.stderr[-3000:]
    assert "not enqueued" in run.stderr
    message = Message.objects.get()
    assert (message.status, message.wamid, message.redriven_at) == (
        "queued",
        None,
        None,
    )
    assert queued_jobs(OUTBOUND_QUEUE) == []

    assert outbound.messages_outbound_redrive(older_than=timedelta(hours=1)) == []
    assert outbound.messages_outbound_redrive(older_than=timedelta(0)) == [message.pk]
    [job] = queued_jobs(OUTBOUND_QUEUE)
    assert job["task"] == "messaging.message_outbound_send"
    assert job["kwargs"] == {"message_id": str(message.pk)}
    # Once per period, not on every beat tick.
    assert outbound.messages_outbound_redrive(older_than=timedelta(minutes=5)) == []

    # The job sends it (console backend); a late duplicate job does nothing.
    outbound.message_outbound_deliver(message_id=message.pk, final_attempt=False)
    message.refresh_from_db()
    assert message.status == "sent" and message.wamid
    wamid = message.wamid
    outbound.message_outbound_deliver(message_id=message.pk, final_attempt=False)
    message.refresh_from_db()
    assert message.wamid == wamid


@pytest.mark.django_db
def test_only_queued_outbound_messages_are_redriven(salon):
    conversation = ConversationFactory(salon=salon, last_inbound_at=timezone.now())
    queued = outbound.message_send_text(conversation=conversation, text="One")
    sent = outbound.message_send_text(conversation=conversation, text="Two")
    Message.objects.filter(pk=sent.pk).update(status="sent", wamid="wamid.SENT")
    inbound = Message.objects.create(
        salon=salon,
        conversation=conversation,
        wamid="wamid.IN",
        direction="in",
        status="received",
        created_at=timezone.now() - timedelta(hours=1),
    )
    redriven = outbound.messages_outbound_redrive(older_than=timedelta(0))
    assert redriven == [queued.pk]
    assert inbound.pk not in redriven
