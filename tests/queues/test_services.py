"""The seed's producer calls make the owning apps' durable jobs, on the right
queue at the right priority (the job records show what was sent)."""

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from messaging.models import Message, WebhookEvent
from notifications.models import EmailLog
from queues.definitions import Priority
from queues.facade import QueueService
from queues.keys import PRIORITY_SEP
from queues.selectors import job_detail
from saas.redis import queue_redis
from tests.factories import BookingFactory, MessageFactory
from tests.processes import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "whatsapp"
NOW_ISO = "2026-06-09T10:13:20+00:00"

pytestmark = pytest.mark.django_db


def broker_message(queue: str, celery_level: int) -> dict:
    key = queue if celery_level == 0 else f"{queue}{PRIORITY_SEP}{celery_level}"
    raw = queue_redis().lrange(key, 0, -1)
    assert len(raw) == 1, (key, raw)
    return json.loads(raw[0])


def only_job(queue: str, celery_level: int) -> dict:
    message = broker_message(queue, celery_level)
    job = job_detail(message["headers"]["id"])
    assert (job["queue"], job["state"]) == (queue, "waiting")
    return message


@pytest.mark.parametrize("priority, level", [(Priority.WEBHOOK, 5), (10, 0)])
def test_add_webhook_job_stores_an_inbox_event_and_publishes_it(
    django_capture_on_commit_callbacks, priority, level
):
    payload = json.loads((FIXTURES / "01_text_inbound.json").read_text())
    with django_capture_on_commit_callbacks(execute=True):
        event = QueueService.add_webhook_job(
            {"salonId": "s1", "payload": payload, "receivedAt": NOW_ISO},
            priority=priority,
        )
    assert WebhookEvent.objects.get(pk=event.pk).status == WebhookEvent.Status.PENDING
    message = only_job("whatsapp:webhook", level)
    assert message["headers"]["task"] == "messaging.webhook_event_process"
    assert message["headers"]["kwargsrepr"] == repr({"event_id": event.pk})


def test_add_webhook_job_refuses_a_payload_that_is_not_a_body():
    with pytest.raises(ValidationError) as error:
        QueueService.add_webhook_job({"payload": "text"})
    assert "payload" in error.value.message_dict
    assert not WebhookEvent.objects.exists()


def test_add_message_status_job_applies_on_the_status_queue():
    message = MessageFactory(
        direction=Message.Direction.OUTBOUND, status=Message.Status.SENT
    )
    QueueService.add_message_status_job(
        {"messageId": str(message.pk), "status": "delivered", "timestamp": NOW_ISO}
    )
    published = only_job("whatsapp:message-status", 2)
    assert published["headers"]["task"] == "messaging.message_statuses_apply"
    assert repr(message.wamid) in published["headers"]["kwargsrepr"]


@pytest.mark.parametrize(
    "data, field",
    [
        ({"messageId": "wamid.unknown", "status": "read"}, "messageId"),
        ({"messageId": "x", "status": "teleported"}, "status"),
    ],
)
def test_add_message_status_job_refuses_what_it_cannot_apply(data, field):
    with pytest.raises(ValidationError) as error:
        QueueService.add_message_status_job(data)
    assert field in error.value.message_dict
    assert QueueService.get_queue_stats("message-status")["waiting"] == 0


@pytest.mark.parametrize("priority, level", [(None, 3), (10, 0)])
def test_add_email_job_logs_and_publishes(
    django_capture_on_commit_callbacks, priority, level
):
    job = {
        "to": "owner@example.com",
        "subject": "Welcome",
        "template": "salon_welcome",
        "data": {"ownerName": "Ana", "salonName": "Studio"},
        "priority": priority,
    }
    with django_capture_on_commit_callbacks(execute=True):
        log = QueueService.add_email_job(job)
    assert EmailLog.objects.get(pk=log.pk).to == "owner@example.com"
    assert only_job("notification:email", level)["headers"]["task"] == (
        "notifications.email_send"
    )


def test_add_email_job_refuses_an_unknown_template():
    with pytest.raises(ValidationError) as error:
        QueueService.add_email_job({"to": "a@example.com", "template": "nope"})
    assert "template" in error.value.message_dict
    assert not EmailLog.objects.exists()


def test_schedule_booking_reminder_writes_a_row_not_a_broker_eta():
    booking = BookingFactory(start_at=timezone.now() + timedelta(days=3))
    send_at = booking.start_at - timedelta(hours=24)
    reminder = QueueService.schedule_booking_reminder(
        {"bookingId": str(booking.pk), "reminderType": "day_before"}, send_at
    )
    assert reminder.due_at == send_at and reminder.status == "pending"
    assert all(
        QueueService.get_queue_stats(name)["waiting"] == 0
        for name in ("reminder", "webhook", "email")
    )


def test_get_queue_stats_takes_alias_or_name(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        QueueService.add_webhook_job(
            {"payload": {"object": "whatsapp_business_account"}}
        )
    assert QueueService.get_queue_stats("webhook")["waiting"] == 1
    assert QueueService.get_queue_stats("whatsapp:webhook")["waiting"] == 1


@pytest.mark.parametrize("how", ["by_name", "by_task"])
def test_a_job_that_cannot_be_sent_leaves_no_record(how):
    from kombu.exceptions import EncodeError

    from queues.definitions import WEBHOOK
    from queues.publish import job_publish
    from queues.tasks import queue_test_job

    unserializable = {"data": {"when": object()}}
    with pytest.raises(EncodeError):
        if how == "by_name":
            job_publish("queues.test_job", queue=WEBHOOK, kwargs=unserializable)
        else:
            job_publish(queue_test_job, kwargs=unserializable)
    assert QueueService.get_queue_stats("webhook")["waiting"] == 0
    assert queue_redis().zcard(f"jobs:q:{WEBHOOK.name}:waiting") == 0
    assert not queue_redis().keys("jobs:j:*")
