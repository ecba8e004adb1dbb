"""What files 17-31 of tests/fixtures/whatsapp (README_more.md) must come to,
checked after every fixture was posted and processed by a worker
(tests/messaging/test_webhook.py)."""

from datetime import UTC, datetime

from django.utils import timezone

from messaging.models import Conversation, Message
from tests.factories import ConversationFactory, MessageFactory

SOFIA = "US.18205511960437725093"
PRIYA_NOW = "US.12958830476612093381"
FLOW_TO_DANA = "wamid.HBgLMTY1MDU1NTAxNDIVAgARGBI1QTFGMEMzM0QyRTg0Qjc3MTkA"
REMINDER_TO_SOFIA = "wamid.HBgBMBUCABEYEjlDMkQ0MUUwN0IzQTU4RjZEMQA="


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


def fixtures_more_outbound(salon) -> dict[str, Message]:
    """The outbound messages files 22 and 27 name (README_more.md): a flow
    sent to Dana, a reminder sent to Sofia's BSUID (no phone number)."""
    dana = Conversation.objects.filter(salon=salon, customer_wa_id="16505550142")
    sofia = ConversationFactory(salon=salon, customer_wa_id="", customer_user_id=SOFIA)
    messages = {}
    for key, conversation, wamid in (
        ("flow_to_dana", dana.first(), FLOW_TO_DANA),
        ("reminder_to_sofia", sofia, REMINDER_TO_SOFIA),
    ):
        messages[key] = MessageFactory(
            conversation=conversation
            or ConversationFactory(salon=salon, customer_wa_id="16505550142"),
            wamid=wamid,
            direction=Message.Direction.OUTBOUND,
            status=Message.Status.SENT,
            created_at=timezone.now(),
        )
    return messages


def fixtures_more_check(salon, inbound: dict[str, Message], outbound, extra) -> None:
    def message(prefix_file: str) -> Message:
        return inbound[prefix_file]

    # 17: a username-only customer lands in the conversation keyed on her BSUID
    # (the one our reminder to her made), with her username and name.
    sofia = Conversation.objects.get(salon=salon, customer_user_id=SOFIA)
    assert sofia.pk == extra["reminder_to_sofia"].conversation_id
    assert (sofia.customer_wa_id, sofia.customer_username) == ("", "sofia.cuts")
    assert sofia.customer_name == "Sofia Marin"
    assert sofia.messages.get(direction="in").body.startswith("Hi, do you have a slot")
    # 27: the status to her BSUID (recipient_user_id, no recipient_id) applied
    reminder = Message.objects.get(pk=extra["reminder_to_sofia"].pk)
    assert (reminder.status, reminder.delivered_at) == ("delivered", at(1781013100))
    # 18: Maria's phone and BSUID in one conversation, with username and parent
    maria = Conversation.objects.get(salon=salon, customer_wa_id="16505551234")
    assert maria.customer_username == "maria.g"
    assert maria.customer_parent_user_id == "US.ENT.11815799212886844830"
    assert (
        Conversation.objects.filter(
            salon=salon, customer_user_id="US.13491208655302741918"
        ).get()
        == maria
    )
    # 20, 31: Priya's conversation moved to her new number, then her new BSUID,
    # with both changes recorded in it; her earlier messages are still there.
    priya = Conversation.objects.get(salon=salon, customer_user_id=PRIYA_NOW)
    assert priya.customer_wa_id == "16505550199"
    assert priya.pk == outbound["buttons_to_priya"].conversation_id
    changes = list(priya.messages.filter(type="system").order_by("created_at"))
    assert [m.content["type"] for m in changes] == [
        "user_changed_number",
        "user_changed_user_id",
    ]
    assert changes[0].body == (
        "User Priya Raman changed from 16505559876 to 16505550199"
    )
    assert priya.messages.filter(type="image").exists()  # 02, before the change
    # 26 (her card, sent from her old number after the change) joins her
    # conversation without bringing that number back. A system message is not
    # the customer writing: 31, the newest, does not move the 24-hour window.
    assert priya.last_inbound_at == at(1781012800)
    assert priya.messages.filter(type="contacts").exists()
    # 21: Tom's security code change recorded in his conversation
    tom = Conversation.objects.get(salon=salon, customer_wa_id="16505553377")
    (identity,) = tom.messages.filter(type="system")
    assert identity.content["type"] == "customer_identity_changed"
    assert "security code changed" in identity.body
    # 22: a Flow's answer, parsed, routed by its flow_token
    flow = message("wamid.HBgLMTY1MDU1NTAxNDIVAgASGBRDOTBBM0U3RjEyRDg0QjY1QzZENgA=")
    assert flow.content["flow_token"] == "booking-flow-8841"
    assert flow.content["response"]["stylist"] == "alex"
    assert "service: balayage" in flow.body and "Sent" not in flow.body
    assert flow.reply_to_id == extra["flow_to_dana"].pk
    # 23: the removed reaction replaces the thumbs-up of 11 on the reminder
    removed = message("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQwRDVGMkI4QzQ3RTE5QTM2MDdFNwA=")
    thumbs = message("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQxQTA5NThCMDdFODk3RUE0QTFFNAA=")
    assert removed.reaction_to_id == outbound["reminder_to_maria"].pk
    assert removed.content["removed"] is True and removed.body == "Reaction removed"
    thumbs.refresh_from_db()
    assert thumbs.content["replaced_by"] == removed.wamid
    # 24: an order, numbers kept as numbers
    order = message("wamid.HBgLMTY1MDU1NTQ0MTAVAgASGBRBMjZFOEQxNEYwM0I1Qzk3QThGOAA=")
    assert order.content["product_items"][0]["item_price"] == 18.5
    assert order.body.startswith("Order: 3 items, 42.50 USD")
    # 25: a location
    location = message("wamid.HBgLMTY1MDU1NTMzNzcVAgASGBQ1RTE5QjdDMkEwNEQ4RjYzQjlBOQA=")
    assert location.content["latitude"] == 37.4548
    assert location.body.startswith("Menlo Park Caltrain")
    # 26: a shared contact card is content, not the sender
    card = message("wamid.HBgLMTY1MDU1NTk4NzYVAgASGBRGNzQwMkM5RTFCNkEzRDU4QzBCMAA=")
    assert card.body == "Ana Lopez"
    assert not Conversation.objects.filter(customer_wa_id="16505550177").exists()
    # 29, 30: documents and videos wait for their download on whatsapp:media
    document = message("wamid.HBgLMTY1MDU1NTQ0MTAVAgASGBQzQjhENjBGNEUyQzE3QTk1RDFDMQA=")
    video = message("wamid.HBgLMTY1MDU1NTAxNDIVAgASGBQ4QzQxRTdBMDVEMzlCMkY2RTJEMgA=")
    assert document.body == "Signed patch-test consent"
    assert document.content["filename"] == "patch-test-consent.pdf"
    assert (document.media_status, video.media_status) == ("pending", "pending")
    assert video.content["mime_type"] == "video/mp4"
