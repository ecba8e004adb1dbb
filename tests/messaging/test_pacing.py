"""Staff replies through the governor (deferred without an attempt, a
coherent job record), pacing state on the queue page and /metrics, and send
errors a person must act on: on the message, per salon on the health page."""

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from bookings import reminder_sending, reminders, services
from messaging import whatsapp
from messaging.governed_sending import governed_rate
from messaging.models import Message
from messaging.throughput import throughput_acquire_many, throughput_state
from queues.definitions import OUTBOUND
from queues.health import health_report
from queues.selectors import job_detail, queue_jobs
from tests.conftest import client_for
from tests.factories import ConversationFactory, SalonFactory, TemplateFactory
from tests.graph_api import GraphApiStandIn
from tests.utils import wait_until

PHONE = "106540352242922"


@pytest.fixture
def graph():
    with GraphApiStandIn(latency=0.05) as standin:
        yield standin


@pytest.fixture
def cloud_settings(settings, graph):
    """This process sends through the stand-in too (service-level tests)."""
    settings.WHATSAPP_BACKEND = "cloud_api"
    settings.WHATSAPP_API_BASE_URL = graph.base_url
    settings.WHATSAPP_ACCESS_TOKEN = "test-token"
    whatsapp._backend.cache_clear()
    yield settings
    whatsapp._backend.cache_clear()


@pytest.fixture
def conversation(user):
    salon = SalonFactory(owner=user, whatsapp_phone_number_id=PHONE)
    return ConversationFactory(
        salon=salon,
        customer_wa_id="16505551234",
        last_inbound_at=timezone.now() - timedelta(hours=1),
    )


def start_outbound_worker(start_worker, graph):
    return start_worker(
        "whatsapp:outbound",
        env={
            "WHATSAPP_BACKEND": "cloud_api",
            "WHATSAPP_API_BASE_URL": graph.base_url,
            "WHATSAPP_ACCESS_TOKEN": "test-token",
        },
    )


def reply(user, conversation, text="See you at 10") -> str:
    response = client_for(user).post(
        f"/api/conversations/{conversation.pk}/messages/", {"text": text}
    )
    assert response.status_code == 202
    return response.json()["id"]


def status_of(message_id) -> str:
    return Message.objects.get(pk=message_id).status


def only_job():
    """The outbound job's record once completed (records are written in the
    background)."""
    rows = queue_jobs(OUTBOUND, "completed").jobs
    if len(rows) != 1:
        return None
    return job_detail(rows[0]["id"])


@pytest.mark.django_db(transaction=True)
def test_metas_too_fast_defers_a_staff_reply_without_spending_an_attempt(
    user, conversation, graph, start_worker
):
    graph.force_error(130429, count=3, phone_number_id=PHONE)
    message_id = reply(user, conversation)
    worker = start_outbound_worker(start_worker, graph)

    wait_until(lambda: status_of(message_id) == "sent", timeout=60)

    codes = [r.error_code for r in graph.requests if r.method == "POST"]
    assert codes == [130429, 130429, 130429, None]  # QUEUE_RETRY_ATTEMPTS is 3
    message = Message.objects.get(pk=message_id)
    assert message.error is None and message.wamid == graph.accepted[0].wamid
    job = wait_until(only_job, timeout=30)
    assert job["attempts"] == "1"  # the deferred copies' runs are not attempts
    # Deferred again after Meta's 130429s: the reduced rate, or the pair's pace
    # (the refused sends took the customer's pair tokens).
    assert job["deferred"].startswith("WhatsApp throughput: ")
    assert "Ignore" not in worker.log() or "succeeded" in worker.log()
    assert throughput_state(PHONE)["last_130429"] is not None


@pytest.mark.django_db(transaction=True)
def test_metas_pair_limit_defers_the_second_reply_until_the_pair_may_talk(
    user, conversation, graph, start_worker
):
    # Meta lets this pair take one message now (the governor allows two).
    graph.configure(pair_burst=1, pair_interval=3.0)
    first = reply(user, conversation, "First")
    second = reply(user, conversation, "Second")
    start_outbound_worker(start_worker, graph)

    wait_until(lambda: {status_of(first), status_of(second)} == {"sent"}, timeout=60)
    codes = [r.error_code for r in graph.requests if r.method == "POST"]
    assert codes.count(131056) >= 1 and codes.count(None) == 2
    assert not Message.objects.filter(status="failed").exists()


@pytest.mark.django_db(transaction=True)
def test_a_reply_without_a_token_waits_for_one(user, conversation, graph, start_worker):
    # Another sender has taken this second's tokens and reserved the slots.
    rate = governed_rate(80)
    taken = throughput_acquire_many(
        [(PHONE, f"3460000{n:04d}") for n in range(200)],
        rate=rate,
        spread_burst=4,
        spread_ahead=0.5,
    )
    assert not all(taken)
    message_id = reply(user, conversation)
    start_outbound_worker(start_worker, graph)

    wait_until(lambda: status_of(message_id) == "sent", timeout=60)
    assert len(graph.accepted) == 1
    assert wait_until(only_job, timeout=30)["attempts"] == "1"


@pytest.mark.django_db
def test_pacing_state_on_the_queue_page_and_in_metrics(client, staff_user, settings):
    settings.METRICS_CACHE_SECONDS = 0
    salon = SalonFactory(whatsapp_phone_number_id=PHONE, name="Upgraded")
    salon.whatsapp_throughput_per_second = 200
    salon.save()
    throughput_acquire_many([(PHONE, f"c{n}") for n in range(10)], rate=190)

    body = client.get("/metrics").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    (rate,) = families["whatsapp_throughput_rate"].samples
    assert rate.labels == {"phone_number_id": PHONE} and rate.value == 200
    (tokens,) = families["whatsapp_throughput_tokens"].samples
    assert tokens.value == 180  # 190 paced (5% headroom), 10 taken

    client.force_login(staff_user)
    html = client.get("/admin/queues/").content.decode()
    assert "WhatsApp pacing" in html and f'data-number="{PHONE}"' in html
    assert '<td class="pacing-tokens">180</td>' in html
    assert '<td class="pacing-last">never</td>' in html


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (131047, "outside_window"),
        (131026, "undeliverable"),
        (132001, "template"),
        (190, "token_expired"),
    ],
)
def test_send_errors_that_need_a_person_are_on_the_message_and_counted(
    graph, cloud_settings, code, kind
):
    salon = SalonFactory(language="en_US")
    TemplateFactory(salon=salon, name="booking_reminder")
    other = SalonFactory()
    booking = services.booking_create(
        salon=salon,
        customer_name="Ann",
        customer_phone="+34612345678",
        service_name="Haircut",
        start_at=timezone.now() + timedelta(minutes=59),
    )
    reminders.reminder_dispatch()
    graph.fail_recipient("34612345678", code)

    reminder = reminder_sending.reminder_deliver(
        reminder_id=booking.reminders.get(status="queued").pk
    )

    assert reminder.status == "failed" and reminder.last_error["code"] == code
    message = Message.objects.get()
    assert message.status == "failed" and message.error["code"] == code
    assert message.error["needs_attention"] == kind and message.error["action"]
    _, report = health_report()
    counts = report["whatsapp_send_errors"]
    assert counts[str(salon.pk)] == {kind: 1} and str(other.pk) not in counts
    alerts = {(a["alert"], a["target"]) for a in report["alerts"]}
    assert (("whatsapp_token_expired", str(salon.pk)) in alerts) == (
        kind == "token_expired"
    )


@pytest.mark.django_db
def test_a_salons_rate_override_is_saved_and_used():
    from django.core.exceptions import ValidationError

    from bookings.services import salon_update
    from messaging.governed_sending import salon_rate

    salon = SalonFactory()
    assert salon_rate(salon) == 80  # WHATSAPP_THROUGHPUT_PER_SECOND
    salon_update(salon=salon, data={"whatsapp_throughput_per_second": 250})
    salon.refresh_from_db()
    assert salon_rate(salon) == 250
    with pytest.raises(ValidationError):
        salon_update(salon=salon, data={"whatsapp_throughput_per_second": 5000})
    salon.refresh_from_db()
    assert salon.whatsapp_throughput_per_second == 250
