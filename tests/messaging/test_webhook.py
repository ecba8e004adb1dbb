"""The webhook's HTTP contract, and every fixture through HTTP and a real worker."""

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from messaging.models import Conversation, Message, OrphanStatus, WebhookEvent
from tests.factories import ConversationFactory
from tests.messaging.conftest import (
    FIXTURES,
    WEBHOOK_URL,
    fixture_bytes,
    post_webhook,
    sign,
    status_body,
)
from tests.messaging.fixtures_more import (
    fixtures_more_check,
    fixtures_more_outbound,
)
from tests.processes import free_port
from tests.utils import run_with_broker_away, wait_until

WORKER_QUEUES = ["whatsapp:webhook", "whatsapp:message-status"]


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


def pending_events() -> int:
    return WebhookEvent.objects.filter(status=WebhookEvent.Status.PENDING).count()


# --- verification handshake ----------------------------------------------------


@pytest.mark.django_db
def test_handshake_answers_the_challenge_as_plain_text(client, settings):
    settings.WHATSAPP_VERIFY_TOKEN = "s3cret-token"
    response = client.get(
        WEBHOOK_URL,
        {
            "hub.mode": "subscribe",
            "hub.verify_token": "s3cret-token",
            "hub.challenge": "1158201444",
        },
    )
    assert response.status_code == 200
    assert response.content == b"1158201444"
    assert response["Content-Type"].startswith("text/plain")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {
            "hub.mode": "unsubscribe",
            "hub.verify_token": "s3cret-token",
            "hub.challenge": "1",
        },
        {"hub.challenge": "1"},
    ],
)
def test_handshake_with_wrong_token_or_mode_is_403(client, settings, params):
    settings.WHATSAPP_VERIFY_TOKEN = "s3cret-token"
    assert client.get(WEBHOOK_URL, params).status_code == 403


@pytest.mark.django_db
def test_handshake_is_403_when_no_token_is_configured(client, settings):
    settings.WHATSAPP_VERIFY_TOKEN = ""
    params = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}
    assert client.get(WEBHOOK_URL, params).status_code == 403


# --- bad input: a clear answer, nothing stored ------------------------------------


@pytest.mark.django_db
def test_valid_post_is_stored_pending_and_acknowledged(client, salon):
    raw = fixture_bytes("01_text_inbound.json")
    response = post_webhook(client, raw)
    assert response.status_code == 200
    event = WebhookEvent.objects.get()
    assert event.status == "pending" and event.body.encode() == raw


@pytest.mark.django_db
@pytest.mark.parametrize(
    "case",
    ["unsigned", "wrong secret", "tampered body", "not sha256", "garbage header"],
)
def test_bad_signature_is_403_and_stores_nothing(client, salon, case):
    raw = fixture_bytes("01_text_inbound.json")
    signature, body = {
        "unsigned": ("", raw),
        "wrong secret": (sign(raw, secret="not-the-app-secret"), raw),
        "tampered body": (sign(raw), raw.replace(b"haircut", b"haircat")),
        "not sha256": ("sha1=" + sign(raw)[7:47], raw),
        "garbage header": ("sha256=\u00e9\u00e9", raw),
    }[case]
    response = post_webhook(client, body, signature=signature)
    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b'{"object": "whatsapp_business_account", ',
        b"[1, 2]",
        b"\xff\xfe{}",
        b"",
        b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=["truncated", "array", "not utf-8", "empty", "nested 100k deep"],
)
def test_signed_body_that_is_not_a_json_object_is_400(client, salon, body):
    response = post_webhook(client, body)
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
def test_body_over_4_mib_is_413_and_stores_nothing(client, salon):
    filler = "x" * (5 * 1024 * 1024)
    body = json.dumps({"object": "whatsapp_business_account", "pad": filler}).encode()
    response = post_webhook(client, body)
    assert response.status_code == 413
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
def test_body_just_under_the_limit_is_accepted(client, salon):
    pad = "x" * (4 * 1024 * 1024 - 100)
    body = json.dumps({"object": "whatsapp_business_account", "pad": pad}).encode()
    assert len(body) <= 4 * 1024 * 1024
    assert post_webhook(client, body).status_code == 200
    assert WebhookEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_database_down_is_503_so_meta_retries(salon):
    raw = fixture_bytes("01_text_inbound.json")
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())  # nothing listens there
    try:
        response = post_webhook(Client(), raw)
    finally:
        connection.close()
        connection.settings_dict.update(original)
    assert response.status_code == 503
    assert not WebhookEvent.objects.exists()
    assert post_webhook(Client(), raw).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_connection_killed_since_the_last_request_still_stores_the_webhook(salon):
    """The webhook skips Django's per-request health check; the INSERT that
    finds the connection dead reconnects and stores the body once."""
    import psycopg

    from tests.conftest import test_database_url

    raw = fixture_bytes("01_text_inbound.json")
    assert post_webhook(Client(), raw).status_code == 200  # a persistent connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    with psycopg.connect(test_database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [backend])
        wait_until(
            lambda: (
                not admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]
                ).fetchone()
            ),
            timeout=10,
            message="backend gone",
        )

    assert post_webhook(Client(), raw).status_code == 200
    assert WebhookEvent.objects.count() == 2


@pytest.mark.django_db
def test_other_methods_are_405(client):
    assert client.put(WEBHOOK_URL, b"{}").status_code == 405


# --- through a real worker ---------------------------------------------------------


def fixture_names() -> list[str]:
    return sorted(p.name for p in Path(FIXTURES).glob("*.json"))


@pytest.mark.django_db(transaction=True)
def test_every_fixture_posted_signed_and_processed_by_a_worker(
    salon, outbound, start_worker
):
    client = Client()
    names = fixture_names()
    assert len(names) == 31
    extra = fixtures_more_outbound(salon)
    for name in names:
        response = post_webhook(client, fixture_bytes(name))
        assert response.status_code == 200, name
    start_worker(WORKER_QUEUES, concurrency=2)

    reminder = outbound["reminder_to_maria"]
    offer = outbound["offer_to_dana"]

    def statuses_applied():
        return (
            pending_events() == 0
            and Message.objects.get(pk=reminder.pk).status == "read"
            and Message.objects.get(pk=offer.pk).status == "read"
            and Message.objects.get(pk=outbound["text_to_tom"].pk).status == "failed"
            and Message.objects.get(pk=extra["reminder_to_sofia"].pk).status
            == "delivered"
        )

    wait_until(statuses_applied, timeout=90, message="all fixtures processed")

    events = dict(WebhookEvent.objects.values_list("pk", "status"))
    # 10: unknown number; 28: a template status update (issue 15 applies them)
    assert sorted(events.values()).count("ignored") == 2
    assert sorted(events.values()).count("processed") == 29

    inbound = {m.wamid: m for m in Message.objects.filter(direction="in")}
    expected = sum(
        len(c["value"].get("messages", []))
        for name in names
        if name != "10_unknown_phone_number_id.json"
        for e in json.loads(fixture_bytes(name))["entry"]
        for c in e["changes"]
    )
    # 19 is an edit: it changes 01 instead of adding a message.
    assert len(inbound) == expected - 1 == 24

    def one(kind: str, before: int = 1781010000) -> Message:
        """The one message of this type in files 01-16 (before 17's time)."""
        (message,) = [
            m for m in inbound.values() if m.type == kind and m.created_at < at(before)
        ]
        return message

    # 01, 04: text
    maria = Conversation.objects.get(salon=salon, customer_wa_id="16505551234")
    assert maria.customer_name == "Maria Gomez"
    assert maria.customer_user_id == "US.13491208655302741918"
    # 01, edited by 19: the new text, the first one kept in its history
    first = inbound["wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQ0RjFBMjFDQUQ3NUJBODY3QTMyQQA="]
    assert first.body == "Hi! Can I book a haircut for Saturday afternoon?"
    assert [e["previous_body"] for e in first.content["edits"]] == [
        "Hi! Can I book a haircut for Saturday morning?"
    ]
    assert maria.messages.filter(direction="in", type="text").count() == 4  # + 18
    dana = Conversation.objects.get(salon=salon, customer_wa_id="16505550142")
    assert dana.customer_name == "Dana Kim"
    # 02: image
    image = one("image")
    assert image.content == {
        "id": "2130857345626467",
        "mime_type": "image/jpeg",
        "sha256": "u5xGqY4jWBQ7jWo63M/pQE2pmWBkCWdgkcCHnS+ExGk=",
        "caption": "This is the colour I'd like",
    }
    assert image.body == "This is the colour I'd like"
    # 03: interactive button reply quoting the buttons
    button_reply = one("interactive")
    assert button_reply.content["id"] == "appt_8841_confirm"
    assert button_reply.content["title"] == button_reply.body == "Confirm"
    assert button_reply.reply_to_id == outbound["buttons_to_priya"].pk
    # 05, 06, 07: sent, delivered, read with Meta's timestamps
    reminder.refresh_from_db()
    assert (reminder.sent_at, reminder.delivered_at, reminder.read_at) == (
        at(1781001200),
        at(1781001203),
        at(1781001500),
    )
    # 08: failed with the error
    tom = Message.objects.get(pk=outbound["text_to_tom"].pk)
    assert tom.error["code"] == 131047 and tom.failed_at == at(1781001800)
    assert "24 hours" in tom.error["details"]
    # 09: reply and status in one value
    dana_reply = inbound[
        "wamid.HBgLMTY1MDU1NTAxNDIVAgASGBQzMjZFRURDMzM3NTA1MDgwNTA0OQA="
    ]
    assert dana_reply.body == "Yes, 5:30 works. See you then!"
    assert dana_reply.reply_to_id == offer.pk
    assert Message.objects.get(pk=offer.pk).read_at == at(1781002400)
    # 10: nothing created for the unknown number
    assert (
        "wamid.HBgLMTY1MDU1NTMzNzcVAgASGBRCMkQ0NTVGREIyOUMzMjMzOTJEMgA=" not in inbound
    )
    assert Conversation.objects.exclude(salon=salon).count() == 0
    # 11: reaction attached to the reminder
    reaction = inbound["wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQxQTA5NThCMDdFODk3RUE0QTFFNAA="]
    assert reaction.reaction_to_id == reminder.pk
    assert reaction.body == "\U0001f44d"
    # 12: unsupported, with its error
    unsupported = one("unsupported")
    assert unsupported.content == {"type": "poll"}
    assert unsupported.error["code"] == 131051
    # 13: voice note
    audio = one("audio")
    assert audio.content["id"] == "6185014990010680"
    assert audio.content["mime_type"] == "audio/ogg; codecs=opus"
    assert audio.content["voice"] is True
    # 14: sticker
    sticker = one("sticker")
    assert sticker.content["mime_type"] == "image/webp"
    assert sticker.content["animated"] is False
    # 15: template quick reply quoting the reminder
    button = one("button")
    assert button.content["payload"] == "RESCHEDULE_APPT_7730"
    assert button.body == "Reschedule" and button.reply_to_id == reminder.pk
    # 16: value-level error noted
    errors_event = WebhookEvent.objects.get(body__contains='"code": 131000')
    assert errors_event.status == "processed" and "131000" in errors_event.last_error
    # The window opens at the newest inbound message; last_message_at (set to
    # now by the seeded outbound message) never moves back to Meta's 2026-06.
    maria.refresh_from_db()
    assert maria.last_inbound_at == at(1781010300)  # 18
    assert maria.last_message_at > at(1781010300)
    fixtures_more_check(salon, inbound, outbound, extra)


def _post_in_thread(body: bytes) -> int:
    try:
        return post_webhook(Client(), body).status_code
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_duplicate_storm_stores_one_message(salon, start_worker):
    raw = fixture_bytes("01_text_inbound.json")
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(_post_in_thread, [raw] * 50))
    assert answers == [200] * 50
    assert WebhookEvent.objects.count() == 50

    start_worker(WORKER_QUEUES, concurrency=4)
    wait_until(lambda: pending_events() == 0, timeout=60, message="storm drained")
    assert Message.objects.count() == 1
    assert Conversation.objects.count() == 1
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}


@pytest.mark.django_db(transaction=True)
def test_statuses_out_of_order_in_one_body_and_in_three_posts(salon, start_worker):
    conversation = ConversationFactory(salon=salon, customer_wa_id="16505551234")
    one_body, three_posts = (
        Message.objects.create(
            salon=salon,
            conversation=conversation,
            wamid=wamid,
            direction="out",
            status="queued",
            created_at=timezone.now(),
        )
        for wamid in ("wamid.ONE_BODY", "wamid.THREE_POSTS")
    )
    order = [("read", 1781001500), ("delivered", 1781001203), ("sent", 1781001200)]
    client = Client()
    assert post_webhook(client, status_body(one_body.wamid, *order)).status_code == 200
    for status in order:
        assert (
            post_webhook(client, status_body(three_posts.wamid, status)).status_code
            == 200
        )

    start_worker(WORKER_QUEUES, concurrency=3)

    def all_stamped():
        return (
            Message.objects.filter(
                pk__in=[one_body.pk, three_posts.pk],
                sent_at__isnull=False,
                delivered_at__isnull=False,
                read_at__isnull=False,
            ).count()
            == 2
        )

    wait_until(all_stamped, timeout=60, message="three timestamps on both")
    for message in (one_body, three_posts):
        message.refresh_from_db()
        assert message.status == "read"
        assert (message.sent_at, message.delivered_at, message.read_at) == (
            at(1781001200),
            at(1781001203),
            at(1781001500),
        )


def _peak_rss_kib(pid: int) -> int:
    """Peak resident memory of a process and its children (the prefork pool)."""
    peak = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if int(fields.get("PPid", "0")) == pid or status.parent.name == str(pid):
            peak = max(peak, int(fields.get("VmHWM", "0 kB").split()[0]))
    return peak


@pytest.mark.django_db(transaction=True)
def test_ten_thousand_statuses_in_one_body(salon, client, start_worker):
    conversation = ConversationFactory(salon=salon, customer_wa_id="16505551234")
    now = timezone.now()
    Message.objects.bulk_create(
        Message(
            salon=salon,
            conversation=conversation,
            wamid=f"wamid.BULK{n:05d}",
            direction="out",
            status="sent",
            created_at=now,
        )
        for n in range(10_000)
    )
    body = status_body("x", ("delivered", 1781001203))
    value = body["entry"][0]["changes"][0]["value"]
    template = value["statuses"][0]
    value["statuses"] = [
        {**template, "id": f"wamid.BULK{n:05d}"} for n in range(10_000)
    ]
    raw = json.dumps(body).encode()
    assert 1_000_000 < len(raw) < 4 * 1024 * 1024

    assert post_webhook(client, raw).status_code == 200
    worker = start_worker(WORKER_QUEUES, concurrency=2)
    wait_until(
        lambda: Message.objects.filter(status="delivered").count() == 10_000,
        timeout=180,
        message="10,000 statuses applied",
    )
    assert WebhookEvent.objects.get().status == "processed"
    assert not Message.objects.filter(direction="in").exists()
    # Applied in small jobs: no worker process grew anywhere near the body's
    # size times the number of statuses.
    assert _peak_rss_kib(worker.proc.pid) < 250 * 1024


@pytest.mark.django_db(transaction=True)
def test_status_before_its_message_is_retried_then_kept_as_orphan(salon, start_worker):
    conversation = ConversationFactory(salon=salon, customer_wa_id="16505551234")
    client = Client()
    for wamid in ("wamid.LATE_ROW", "wamid.NEVER"):
        body = status_body(wamid, ("delivered", 1781001203))
        assert post_webhook(client, body).status_code == 200
    worker = start_worker(WORKER_QUEUES, concurrency=2)
    wait_until(lambda: "Retry in" in worker.log(), timeout=30, message="a retry")

    # Our own outbound row commits after Meta's status arrived.
    late = Message.objects.create(
        salon=salon,
        conversation=conversation,
        wamid="wamid.LATE_ROW",
        direction="out",
        status="sent",
        created_at=timezone.now(),
    )
    wait_until(
        lambda: OrphanStatus.objects.filter(wamid="wamid.NEVER").exists(),
        timeout=90,
        message="orphan kept after the retries",
    )
    late.refresh_from_db()
    assert late.status == "delivered" and late.delivered_at == at(1781001203)
    assert not OrphanStatus.objects.filter(wamid="wamid.LATE_ROW").exists()
    assert not Message.objects.filter(wamid="wamid.NEVER").exists()
    orphan = OrphanStatus.objects.get()
    assert (orphan.status, orphan.salon_id) == ("delivered", salon.pk)


BROKER_AWAY_SCRIPT = """
import django, sys
django.setup()
import saas.celery
from messaging import inbox
from queues.definitions import RetryableJobError
try:
    inbox.webhook_event_process(event_id=int(sys.argv[1]))
except RetryableJobError as exc:
    print("retryable", exc)
"""


@pytest.mark.django_db(transaction=True)
def test_broker_lost_while_fanning_out_keeps_the_event_pending(
    salon, outbound, subprocess_env
):

    body = fixture_bytes("09_messages_and_statuses_combined.json")
    assert post_webhook(Client(), body).status_code == 200
    event = WebhookEvent.objects.get()
    run = run_with_broker_away(BROKER_AWAY_SCRIPT, str(event.pk), env=subprocess_env)
    assert "retryable" in run.stdout, run.stderr[-3000:]
    event.refresh_from_db()
    assert (event.status, event.attempts) == ("pending", 0)
    # Rolled back with it: the message of the same body is not half-stored.
    assert not Message.objects.filter(direction="in").exists()
