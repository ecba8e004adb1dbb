"""One conversation per customer per salon, whether WhatsApp shares the phone
number, the business-scoped user id (BSUID), or both (messaging/customers.py
through the inbox)."""

import json
import threading

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from messaging import inbox
from messaging.inbox_reading import Outcome, payload_walk, salons_by_number
from messaging.models import Conversation, Message, WebhookEvent
from tests.factories import ConversationFactory
from tests.messaging.conftest import fixture_json, webhook_envelope
from tests.utils import wait_until

pytestmark = pytest.mark.django_db

MARIA_PHONE = "16505551234"
MARIA_BSUID = "US.13491208655302741918"
SOFIA_BSUID = "US.18205511960437725093"


def message_body(
    wamid: str,
    *,
    phone: str = "",
    bsuid: str = "",
    username: str = "",
    name: str = "Customer",
    at: int = 1781010000,
) -> dict:
    contact = {"profile": {"name": name}}
    message = {"id": wamid, "timestamp": str(at), "type": "text"}
    message["text"] = {"body": f"text of {wamid}"}
    if phone:
        contact["wa_id"] = message["from"] = phone
    if bsuid:
        contact["user_id"] = message["from_user_id"] = bsuid
    if username:
        contact["profile"]["username"] = username
    return webhook_envelope({"contacts": [contact], "messages": [message]})


def ingest(*bodies: dict) -> None:
    """Each body an event, all applied in one batch."""
    for body in bodies:
        inbox.webhook_event_receive(body=json.dumps(body))
    inbox.webhook_events_process_batch(limit=100)


def conversation_of(wamid: str) -> Conversation:
    return Message.objects.select_related("conversation").get(wamid=wamid).conversation


def test_a_username_only_customer_gets_a_conversation_keyed_on_the_bsuid(salon):
    ingest(fixture_json("17_username_only_inbound.json"))
    conversation = Conversation.objects.get()
    assert conversation.customer_wa_id == ""
    assert conversation.customer_user_id == SOFIA_BSUID
    assert conversation.customer_username == "sofia.cuts"
    assert conversation.customer_label == "Sofia Marin"
    assert conversation.messages.get().body.startswith("Hi, do you have a slot")


def test_bsuid_first_then_phone_lands_in_the_same_conversation(salon):
    ingest(message_body("wamid.A", bsuid=MARIA_BSUID, username="maria.g"))
    first = conversation_of("wamid.A")
    ingest(message_body("wamid.B", phone=MARIA_PHONE, bsuid=MARIA_BSUID))
    ingest(message_body("wamid.C", phone=MARIA_PHONE))

    assert Conversation.objects.count() == 1
    conversation = Conversation.objects.get()
    assert conversation.pk == first.pk
    assert (conversation.customer_wa_id, conversation.customer_user_id) == (
        MARIA_PHONE,
        MARIA_BSUID,
    )
    assert conversation.customer_username == "maria.g"
    assert conversation.messages.count() == 3


def test_phone_first_then_bsuid_only_lands_in_the_same_conversation(salon):
    ingest(message_body("wamid.A", phone=MARIA_PHONE, bsuid=MARIA_BSUID))
    ingest(message_body("wamid.B", bsuid=MARIA_BSUID))
    assert conversation_of("wamid.A") == conversation_of("wamid.B")
    assert Conversation.objects.count() == 1


def test_two_conversations_of_one_person_merge_when_both_ids_arrive(salon):
    by_phone = ConversationFactory(salon=salon, customer_wa_id=MARIA_PHONE)
    ingest(message_body("wamid.A", phone=MARIA_PHONE, at=1781000000))
    ingest(message_body("wamid.B", bsuid=MARIA_BSUID, at=1781000100))
    assert Conversation.objects.count() == 2

    ingest(message_body("wamid.C", phone=MARIA_PHONE, bsuid=MARIA_BSUID))

    merged = Conversation.objects.get()
    assert merged.pk == by_phone.pk  # the older one survives
    assert (merged.customer_wa_id, merged.customer_user_id) == (
        MARIA_PHONE,
        MARIA_BSUID,
    )
    assert set(merged.messages.values_list("wamid", flat=True)) == {
        "wamid.A",
        "wamid.B",
        "wamid.C",
    }


def test_both_ids_in_one_batch_make_one_conversation(salon):
    ingest(
        message_body("wamid.A", bsuid=MARIA_BSUID),
        message_body("wamid.B", phone=MARIA_PHONE),
        message_body("wamid.C", phone=MARIA_PHONE, bsuid=MARIA_BSUID),
    )
    assert Conversation.objects.count() == 1
    assert Message.objects.count() == 3


def test_another_salons_customer_with_the_same_ids_is_another_conversation(salon):
    from tests.factories import SalonFactory

    other = SalonFactory(whatsapp_phone_number_id="106540352242999")
    body = message_body("wamid.A", phone=MARIA_PHONE, bsuid=MARIA_BSUID)
    other_body = json.loads(json.dumps(body).replace("wamid.A", "wamid.B"))
    other_body["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = (
        other.whatsapp_phone_number_id
    )
    ingest(body, other_body)
    assert conversation_of("wamid.A").salon == salon
    assert conversation_of("wamid.B").salon == other


def test_a_number_change_moves_the_conversation_and_records_it(salon):
    priya = ConversationFactory(
        salon=salon,
        customer_wa_id="16505559876",
        customer_user_id="US.10483920175536628409",
    )
    ingest(fixture_json("20_system_user_changed_number.json"))
    priya.refresh_from_db()
    assert priya.customer_wa_id == "16505550199"
    assert priya.customer_user_id == "US.17720398461129054730"
    (change,) = priya.messages.all()
    assert change.type == "system" and "16505550199" in change.body
    assert priya.last_inbound_at is None  # not the customer writing

    ingest(message_body("wamid.NEW", phone="16505550199"))
    assert conversation_of("wamid.NEW") == priya
    ingest(fixture_json("31_system_user_changed_user_id.json"))
    priya.refresh_from_db()
    assert priya.customer_user_id == "US.12958830476612093381"
    assert priya.customer_wa_id == "16505550199"
    assert Conversation.objects.count() == 1


def test_a_number_change_into_an_existing_conversation_merges_them(salon):
    old = ConversationFactory(salon=salon, customer_wa_id="16505559876")
    new = ConversationFactory(salon=salon, customer_wa_id="16505550199")
    ingest(message_body("wamid.FROM_NEW", phone="16505550199"))
    ingest(fixture_json("20_system_user_changed_number.json"))
    (survivor,) = Conversation.objects.all()
    assert survivor.pk == old.pk and survivor.customer_wa_id == "16505550199"
    assert not Conversation.objects.filter(pk=new.pk).exists()
    assert conversation_of("wamid.FROM_NEW") == survivor


def test_bsuid_batches_cost_the_same_queries_whatever_their_size(salon):
    def queries_for(count: int, prefix: str) -> int:
        for n in range(count):
            body = [
                message_body(f"wamid.{prefix}p{n}", phone=f"1{prefix}{n:04d}"),
                message_body(f"wamid.{prefix}u{n}", bsuid=f"US.{prefix}{n:06d}"),
                message_body(
                    f"wamid.{prefix}b{n}",
                    phone=f"1{prefix}{n:04d}",
                    bsuid=f"US.{prefix}{n:06d}",
                ),
            ][n % 3]
            inbox.webhook_event_receive(body=json.dumps(body))
        with CaptureQueriesContext(connection) as queries:
            assert inbox.webhook_events_process_batch(limit=100) == count
        return len(queries)

    # Warm: the first batch of each size makes its conversations.
    assert queries_for(3, "44") == queries_for(30, "55")


def test_walking_a_username_only_body_needs_no_phone(salon):
    payload = fixture_json("17_username_only_inbound.json")
    outcome = Outcome()
    inbound = payload_walk(payload, salons_by_number([payload]), outcome)
    ((sighting, message),) = inbound.messages
    assert (sighting.phone, sighting.user_id) == ("", SOFIA_BSUID)
    assert sighting.profile["customer_username"] == "sofia.cuts"
    assert outcome.notes == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_drains_make_one_conversation_for_one_person(salon):
    """Drain A stores a BSUID-only message and holds its transaction open; drain
    B, with a message carrying phone and BSUID, blocks on the unique index
    until A commits, then finds A's conversation and adds the phone to it."""
    a_inserted, a_commit = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def drain_a():
        try:
            with transaction.atomic():
                inbox.webhook_event_receive(
                    body=json.dumps(message_body("wamid.A", bsuid=MARIA_BSUID))
                )
            with transaction.atomic():
                inbox.webhook_events_process_batch(limit=1)
                a_inserted.set()
                a_commit.wait(30)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    def drain_b():
        try:
            inbox.webhook_event_receive(
                body=json.dumps(
                    message_body("wamid.B", phone=MARIA_PHONE, bsuid=MARIA_BSUID)
                )
            )
            inbox.webhook_events_process_batch(limit=1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    a = threading.Thread(target=drain_a)
    a.start()
    assert a_inserted.wait(30)
    b = threading.Thread(target=drain_b)
    b.start()

    def b_waits_on_a_lock() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            return cursor.fetchone()[0] >= 1

    wait_until(b_waits_on_a_lock, timeout=30, message="drain B blocks on A's row")
    a_commit.set()
    a.join(30)
    b.join(30)
    assert errors == []
    assert not WebhookEvent.objects.filter(status="pending").exists()
    (conversation,) = Conversation.objects.all()
    assert (conversation.customer_wa_id, conversation.customer_user_id) == (
        MARIA_PHONE,
        MARIA_BSUID,
    )
    assert conversation.messages.count() == 2


def test_the_api_shows_the_username_cached_or_not(user, other_user):
    from tests.conftest import client_for
    from tests.factories import SalonFactory

    salon = SalonFactory(owner=user)
    conversation = ConversationFactory(
        salon=salon,
        customer_wa_id="",
        customer_user_id=SOFIA_BSUID,
        customer_username="sofia.cuts",
    )
    url = f"/api/conversations/{conversation.pk}/"
    for _ in range(2):  # computed, then from conversation:{id}
        body = client_for(user).get(url).json()
        assert body["customer_username"] == "sofia.cuts"
        assert (body["customer_wa_id"], body["customer_user_id"]) == ("", SOFIA_BSUID)
    assert client_for(other_user).get(url).status_code == 404
