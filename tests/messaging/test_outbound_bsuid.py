"""Staff replies reach a customer the way Meta's Send API accepts: ``to`` with
the phone number when we know it, ``recipient`` with the BSUID otherwise."""

from datetime import timedelta

import pytest
from django.utils import timezone

from messaging import outbound
from tests.factories import ConversationFactory
from tests.graph_api import GraphApiStandIn
from tests.messaging.conftest import fixture_json, status_body
from tests.messaging.test_services import ingest

TOKEN = "test-token"
SOFIA = "US.18205511960437725093"


@pytest.fixture
def graph(settings):
    with GraphApiStandIn(token=TOKEN, latency=0.0) as standin:
        settings.WHATSAPP_BACKEND = "cloud_api"
        settings.WHATSAPP_API_BASE_URL = standin.base_url
        settings.WHATSAPP_ACCESS_TOKEN = TOKEN
        yield standin


def reply(conversation, text: str):
    message = outbound.message_send_text(conversation=conversation, text=text)
    return outbound.message_outbound_deliver(message_id=message.pk, final_attempt=True)


@pytest.mark.django_db
def test_a_username_only_customer_is_answered_by_bsuid(graph, salon):
    ingest(fixture_json("17_username_only_inbound.json"))
    conversation = salon.conversations.get(customer_user_id=SOFIA)
    conversation.last_inbound_at = timezone.now()  # she wrote just now
    conversation.save()
    message = reply(conversation, "Friday 10:00 is free")

    assert message.status == "sent" and message.wamid
    (send,) = graph.sends_to(SOFIA)
    assert send.payload["recipient"] == SOFIA and "to" not in send.payload
    assert send.wamid == message.wamid
    # Her delivered status (recipient_user_id, no recipient_id) applies by wamid.
    body = status_body(message.wamid, ("delivered", 1781013100), recipient=None)
    value = body["entry"][0]["changes"][0]["value"]
    value["statuses"][0].pop("recipient_id")
    value["statuses"][0]["recipient_user_id"] = SOFIA
    from messaging import services

    assert (
        services.message_statuses_apply(salon_id=salon.pk, statuses=value["statuses"])
        == []
    )
    message.refresh_from_db()
    assert message.status == "delivered"


@pytest.mark.django_db
def test_a_known_phone_number_is_preferred(graph, salon):
    conversation = ConversationFactory(
        salon=salon,
        customer_wa_id="16505551234",
        customer_user_id="US.13491208655302741918",
        last_inbound_at=timezone.now() - timedelta(minutes=5),
    )
    reply(conversation, "See you at 10")
    (send,) = graph.accepted
    assert send.payload["to"] == "16505551234" and "recipient" not in send.payload
