"""Issue 13: POST /admin/queue/test runs the queue's real processor with the
seed's data shapes, on real workers; dryRun keeps the no-op test job."""

import json

import pytest

from messaging.models import Message, WebhookEvent
from notifications.models import EmailLog
from queues.definitions import QUEUES
from queues.keys import TEST_JOB_LOG_KEY
from queues.models import QueueAction
from queues.selectors import job_detail, queue_stats
from saas.redis import queue_redis
from tests.factories import MessageFactory, SalonFactory
from tests.graph_api import DEFAULT_TOKEN, GraphApiStandIn
from tests.messaging.conftest import SALON_PHONE_NUMBER_ID, fixture_json
from tests.notifications.test_services import BOOKING_DATA
from tests.utils import queued_jobs, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def post_test(client, queue, data, **extra):
    return client.post(
        "/admin/queue/test", {"queueName": queue, "data": data, **extra}, format="json"
    )


def state(job_id):
    return (job_detail(job_id) or {}).get("state")


def test_email_test_job_delivers_through_smtp(staff_client, start_worker, smtp_server):
    data = {
        "to": "oncall@example.com",
        "subject": "Queue check",
        "template": "booking_confirmation",
        "data": BOOKING_DATA,
    }
    response = post_test(staff_client, "notification:email", data)
    assert response.status_code == 202
    body = response.json()
    assert job_detail(body["jobId"])["queue"] == "notification:email"
    start_worker("notification:email", env={"EMAIL_URL": smtp_server.url})
    wait_until(lambda: state(body["jobId"]) == "completed", timeout=60)
    [mail] = smtp_server.to("oncall@example.com")
    assert mail.subject == "Queue check"
    assert "Your booking at Studio & Co is confirmed." in mail.body("plain")
    assert EmailLog.objects.get(pk=body["emailLogId"]).status == "sent"
    assert QueueAction.objects.get().action == "test"


@pytest.fixture
def graph():
    with GraphApiStandIn(latency=0.0, pair_burst=None) as server:
        yield server


def cloud_env(graph):
    return {
        "WHATSAPP_BACKEND": "cloud_api",
        "WHATSAPP_API_BASE_URL": graph.base_url,
        "WHATSAPP_ACCESS_TOKEN": DEFAULT_TOKEN,
    }


def test_outbound_and_reminder_test_jobs_send_through_the_graph_api(
    staff_client, start_worker, graph
):
    salon = SalonFactory(whatsapp_phone_number_id=SALON_PHONE_NUMBER_ID)
    outbound = post_test(
        staff_client,
        "outbound",
        {"salonId": str(salon.pk), "to": "+16505551234", "text": "Queue check"},
    )
    reminder = post_test(
        staff_client,
        "booking:reminder",
        {"salonId": str(salon.pk), "to": "+16505559876", "parameters": ["Ann"]},
    )
    assert (outbound.status_code, reminder.status_code) == (202, 202)
    start_worker(["whatsapp:outbound", "booking:reminder"], env=cloud_env(graph))
    for response in (outbound, reminder):
        job_id = response.json()["jobId"]
        wait_until(lambda job_id=job_id: state(job_id) == "completed", timeout=60)
    [text] = graph.sends_to("16505551234")
    assert text.payload["text"]["body"] == "Queue check"
    assert text.phone_number_id == SALON_PHONE_NUMBER_ID
    [template] = graph.sends_to("16505559876")
    assert template.payload["type"] == "template"
    assert template.payload["template"]["name"] == "booking_reminder"
    assert not Message.objects.exists()  # an operator's number, not a customer


def test_webhook_test_job_stores_an_inbox_event_and_drains_it(
    staff_client, start_worker
):
    SalonFactory(whatsapp_phone_number_id=SALON_PHONE_NUMBER_ID)
    payload = fixture_json("01_text_inbound.json")
    response = post_test(staff_client, "webhook", {"payload": payload})
    assert response.status_code == 202
    event_id = response.json()["eventId"]
    assert json.loads(WebhookEvent.objects.get(pk=event_id).body) == payload
    start_worker("whatsapp:webhook")
    wait_until(
        lambda: WebhookEvent.objects.get(pk=event_id).processed_at is not None,
        timeout=60,
    )
    assert Message.objects.filter(direction="in").count() == 1


def test_dry_run_only_runs_the_no_op_job(staff_client, start_worker, smtp_server):
    data = {"to": "oncall@example.com", "subject": "S", "template": "x"}
    response = post_test(staff_client, "email", data, dryRun=True)
    assert response.status_code == 202 and response.json()["dryRun"] is True
    job_id = response.json()["jobId"]
    assert job_detail(job_id)["task"] == "queues.test_job"
    start_worker("notification:email", env={"EMAIL_URL": smtp_server.url})
    wait_until(lambda: state(job_id) == "completed", timeout=60)
    assert json.loads(queue_redis().lindex(TEST_JOB_LOG_KEY, 0)) == data
    assert smtp_server.received == [] and not EmailLog.objects.exists()


@pytest.mark.parametrize(
    "queue,data,field",
    [
        (
            "email",
            {"to": "x@example.com", "subject": "S", "template": "nope"},
            "template",
        ),
        ("email", {"to": "nobody", "subject": "S", "template": "salon_welcome"}, "to"),
        (
            "email",
            {"to": "x@example.com", "subject": "S", "template": "salon_welcome"},
            "data",
        ),
        ("webhook", {"payload": "text"}, "payload"),
        (
            "outbound",
            {"salonId": "not-a-uuid", "to": "+16505551234", "text": "t"},
            "salonId",
        ),
        ("outbound", {"to": "+16505551234", "text": "t"}, "salonId"),
        (
            "reminder",
            {"salonId": "00000000-0000-0000-0000-000000000000", "to": "+16505551234"},
            "salonId",
        ),
        ("reminder", {"to": "0612"}, "to"),
        ("message-status", {"messageId": "m", "status": "lost"}, "status"),
    ],
)
def test_bad_test_job_data_is_400_naming_the_field(staff_client, queue, data, field):
    response = post_test(staff_client, queue, data)
    assert response.status_code == 400, response.content
    assert field in response.json()["data"], response.json()
    assert sum(queue_stats(spec)["waiting"] for spec in QUEUES) == 0
    assert not EmailLog.objects.exists() and not WebhookEvent.objects.exists()
    assert not QueueAction.objects.exists()


EMAIL_DATA = {
    "to": "oncall@example.com",
    "subject": "Queue check",
    "template": "salon_welcome",
    "data": {"ownerName": "Ana", "salonName": "Test"},
}


@pytest.mark.django_db
def test_test_job_from_the_page(client, staff_user, django_capture_on_commit_callbacks):
    client.force_login(staff_user)
    url = "/admin/queues/email/test/"
    with django_capture_on_commit_callbacks(execute=True):
        sent = client.post(url, {"data": json.dumps(EMAIL_DATA)}, follow=True)
    assert "Test job sent to notification:email" in sent.content.decode()
    [log] = EmailLog.objects.all()
    [job] = queued_jobs("notification:email", task="notifications.email_send")
    assert job["kwargs"]["data"]["to"] == "oncall@example.com"
    assert job["kwargs"]["log_id"] == str(log.pk)

    bad = client.post(url, {"data": '{"to": "nobody"}'}, follow=True)
    assert "Test job not sent" in bad.content.decode()
    client.post(url, {"data": "{", "dry_run": "1"})
    client.post(url, {"data": "{}", "dry_run": "1"})
    [noop] = queued_jobs("notification:email", task="queues.test_job")
    assert noop["kwargs"] == {"data": {}}
    assert EmailLog.objects.count() == 1
    assert QueueAction.objects.filter(action="test").count() == 2


@pytest.mark.django_db
def test_test_job_from_the_command(django_capture_on_commit_callbacks):
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "queue_test", "email", "--data", json.dumps(EMAIL_DATA), stdout=out
        )
    assert json.loads(out.getvalue())["emailLogId"] == str(EmailLog.objects.get().pk)
    assert queued_jobs("notification:email", task="notifications.email_send")
    with pytest.raises(CommandError, match="to"):
        call_command("queue_test", "email", "--data", '{"to": "x"}')
    with pytest.raises(CommandError, match="JSON"):
        call_command("queue_test", "email", "--data", "{")
    call_command("queue_test", "webhook", "--dry-run", stdout=out)
    assert queued_jobs("whatsapp:webhook", task="queues.test_job")


def test_message_status_test_job_applies_the_status(staff_client, start_worker):
    message = MessageFactory(
        direction=Message.Direction.OUTBOUND, status=Message.Status.SENT
    )
    response = post_test(
        staff_client,
        "message-status",
        {"messageId": str(message.pk), "status": "delivered"},
    )
    assert response.status_code == 202
    start_worker("whatsapp:message-status")
    job_id = response.json()["jobId"]
    wait_until(lambda: state(job_id) == "completed", timeout=60)
    message.refresh_from_db()
    assert message.status == "delivered" and message.delivered_at is not None


def test_media_test_job_downloads_a_pending_message_s_media(
    staff_client, start_worker, graph, tmp_path
):
    """whatsapp:media's test job runs the real download for a message whose
    media is still pending (the Graph stand-in serves it)."""
    from tests.messaging.test_media import MEDIA_ID, PHOTO, image_message

    salon = SalonFactory(whatsapp_phone_number_id=SALON_PHONE_NUMBER_ID)
    message = image_message(salon)
    graph.add_media(MEDIA_ID, PHOTO, "image/jpeg")
    response = post_test(staff_client, "media", {"messageId": str(message.pk)})
    assert response.status_code == 202, response.content
    start_worker(
        "whatsapp:media",
        env={**cloud_env(graph), "MEDIA_ROOT": str(tmp_path / "media")},
    )
    wait_until(lambda: state(response.json()["jobId"]) == "completed", timeout=60)
    message.refresh_from_db()
    assert message.media_status == "stored" and message.media_size == len(PHOTO)

    unknown = post_test(staff_client, "media", {"messageId": str(message.salon_id)})
    assert unknown.status_code == 400 and "messageId" in str(unknown.json())
