"""get_queue_stats against a broker holding jobs at every priority."""

import time

import pytest

from queues import records
from queues.definitions import EMAIL, WEBHOOK
from queues.keys import broker_lists
from queues.publish import job_publish
from queues.selectors import mask_personal_data, queue_stats
from queues.services import queue_pause
from queues.tasks import queue_test_job
from saas.redis import queue_redis

pytestmark = pytest.mark.django_db


def test_waiting_counts_every_priority_sub_list():
    published = 0
    for priority in range(1, 11):
        for _ in range(priority):  # 1 job at priority 1 ... 10 at priority 10
            job_publish(
                queue_test_job, kwargs={"data": {}}, priority=priority, queue=WEBHOOK
            )
            published += 1
    job_publish(queue_test_job, kwargs={"data": {}}, priority=7, queue=EMAIL)
    lengths = [queue_redis().llen(key) for key in broker_lists(WEBHOOK.name)]
    assert lengths == list(range(10, 0, -1))  # level 0 (priority 10) holds 10
    stats = queue_stats(WEBHOOK)
    assert stats["waiting"] == published == 55
    assert queue_stats(EMAIL)["waiting"] == 1


def test_delayed_active_finished_and_paused():
    queue_test_job.apply_async(kwargs={"data": {}}, countdown=3600)
    now = time.time()
    records.record_transition(job_id="a", queue=WEBHOOK.name, state="active", now=now)
    for n in range(3):
        records.record_transition(
            job_id=f"c{n}", queue=WEBHOOK.name, state="completed", now=now
        )
    records.record_transition(job_id="f", queue=WEBHOOK.name, state="failed", now=now)
    queue_pause(spec=WEBHOOK, actor="test")
    assert queue_stats(WEBHOOK) == {
        "queue": "whatsapp:webhook",
        "waiting": 1,  # an ETA job sits in the broker until a worker holds it
        "active": 1,
        "delayed": 1,
        "completed": 3,
        "failed": 1,
        "paused": True,
    }


def test_active_job_moving_on_leaves_the_active_count():
    records.record_transition(job_id="a", queue=WEBHOOK.name, state="active")
    records.record_transition(job_id="a", queue=WEBHOOK.name, state="completed")
    stats = queue_stats(WEBHOOK)
    assert (stats["active"], stats["completed"]) == (0, 1)


@pytest.mark.parametrize(
    "text,masked",
    [
        ('{"to": "ann@example.com"}', '{"to": "a***@example.com"}'),
        ('{"wa_id": "16505551234"}', '{"wa_id": "16******34"}'),
        ('{"phone": "+447700900123"}', '{"phone": "+44******23"}'),
        (
            '{"salon": "3f2b1c9e-1234-4d6a-9b1e-123456789012"}',
            '{"salon": "3f2b1c9e-1234-4d6a-9b1e-123456789012"}',
        ),
        ('{"n": 42}', '{"n": 42}'),
    ],
)
def test_personal_data_is_masked_for_display(text, masked):
    assert mask_personal_data(text) == masked
