"""The seed's producer calls publish the owning apps' tasks by name, on the
right queue at the right priority (the job records show what was sent)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from queues.selectors import PRIORITY_SEP, job_detail
from queues.services import QueueService
from saas.redis import queue_redis

pytestmark = pytest.mark.django_db


def broker_message(queue: str, celery_level: int) -> dict:
    key = queue if celery_level == 0 else f"{queue}{PRIORITY_SEP}{celery_level}"
    raw = queue_redis().lrange(key, 0, -1)
    assert len(raw) == 1, (key, raw)
    return json.loads(raw[0])


@pytest.mark.parametrize(
    "call,queue,level,task",
    [
        (
            lambda: QueueService.add_webhook_job({"salonId": "s1", "payload": {}}),
            "whatsapp:webhook",
            5,
            "messaging.webhook_process",
        ),
        (
            lambda: QueueService.add_webhook_job({"payload": {}}, priority=10),
            "whatsapp:webhook",
            0,
            "messaging.webhook_process",
        ),
        (
            lambda: QueueService.add_message_status_job(
                {"messageId": "m", "status": "delivered"}
            ),
            "whatsapp:message-status",
            2,
            "messaging.status_apply",
        ),
        (
            lambda: QueueService.add_email_job({"to": "a@example.com"}),
            "notification:email",
            3,
            "notifications.email_send",
        ),
        (
            lambda: QueueService.add_email_job({"to": "a@example.com", "priority": 10}),
            "notification:email",
            0,
            "notifications.email_send",
        ),
        (
            lambda: QueueService.schedule_booking_reminder(
                {"bookingId": "b1"}, timezone.now() - timedelta(seconds=1)
            ),
            "booking:reminder",
            3,
            "bookings.reminder_send",
        ),
    ],
)
def test_seed_calls_publish_by_task_name(call, queue, level, task):
    result = call()
    message = broker_message(queue, level)
    assert message["headers"]["task"] == task
    assert message["headers"]["id"] == result.id
    job = job_detail(result.id)
    assert (job["queue"], job["task"], job["state"]) == (queue, task, "waiting")


def test_get_queue_stats_takes_alias_or_name():
    QueueService.add_webhook_job({"payload": {}})
    assert QueueService.get_queue_stats("webhook")["waiting"] == 1
    assert QueueService.get_queue_stats("whatsapp:webhook")["waiting"] == 1


@pytest.mark.parametrize("how", ["by_name", "by_task"])
def test_a_job_that_cannot_be_sent_leaves_no_record(how):
    from kombu.exceptions import EncodeError

    from queues.definitions import WEBHOOK
    from queues.services import job_enqueue, job_send
    from queues.tasks import queue_test_job

    unserializable = {"data": {"when": object()}}
    with pytest.raises(EncodeError):
        if how == "by_name":
            job_send("queues.test_job", queue=WEBHOOK, kwargs=unserializable)
        else:
            job_enqueue(queue_test_job, kwargs=unserializable)
    assert QueueService.get_queue_stats("webhook")["waiting"] == 0
    assert queue_redis().zcard(f"jobs:q:{WEBHOOK.name}:waiting") == 0
    assert not queue_redis().keys("jobs:j:*")
