"""Jobs the broker lost (queues/lost_jobs.py): a worker SIGKILLed after it
took a message off its list (BRPOP) and before kombu kept it unacked. The
tests take the message off the list exactly as that worker did, on the real
broker, and let the sweep find it; the sweep's clock is moved on instead of
sleeping (``now=``)."""

import importlib
import json
import time

import pytest

from messaging.models import Message
from messaging.services import MESSAGE_STATUSES_APPLY_TASK
from queues import records
from queues.definitions import MESSAGE_STATUS, WEBHOOK
from queues.keys import LOST_SUSPECTS_KEY, TEST_JOB_LOG_KEY, broker_lists
from queues.lost_jobs import lost_jobs_recover
from queues.publish import job_publish
from queues.selectors import job_detail
from queues.services import queue_pause, queue_resume
from saas.redis import queue_redis
from tests.factories import MessageFactory
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

AFTER, CONFIRM = 60.0, 30.0


@pytest.fixture(autouse=True)
def thresholds(settings):
    settings.QUEUE_LOST_JOB_AFTER_SECONDS = AFTER
    settings.QUEUE_LOST_JOB_CONFIRM_SECONDS = CONFIRM


def take_like_a_dying_worker(queue: str) -> str:
    """BRPOP the queue's next message, as kombu does, and drop it: the worker
    died before it kept the message in ``unacked``. Returns its job id."""
    _, raw = queue_redis().brpop(broker_lists(queue), timeout=5)
    return json.loads(raw)["headers"]["id"]


def in_broker_lists(queue: str, job_id: str) -> bool:
    client = queue_redis()
    return any(
        json.loads(raw)["headers"]["id"] == job_id
        for key in broker_lists(queue)
        for raw in client.lrange(key, 0, -1)
    )


def record_state(job_id: str) -> str | None:
    return (job_detail(job_id) or {}).get("state")


def record_written(job_id: str) -> dict:
    return wait_until(lambda: job_detail(job_id), timeout=10)


def test_a_lost_status_job_is_found_twice_then_published_again_and_applied(
    start_worker,
):
    message = MessageFactory(
        direction=Message.Direction.OUTBOUND,
        status=Message.Status.SENT,
        wamid="wamid.LOST0001",
    )
    job = job_publish(
        MESSAGE_STATUSES_APPLY_TASK,
        queue=MESSAGE_STATUS,
        kwargs={
            "salon_id": str(message.salon_id),
            "statuses": [
                {"id": message.wamid, "status": "read", "timestamp": "1796160000"}
            ],
        },
    )
    record_written(job.id)
    assert take_like_a_dying_worker(MESSAGE_STATUS.name) == job.id
    published = time.time()

    # Not yet overdue: nothing happens.
    assert lost_jobs_recover(now=published + AFTER / 2).suspects == 0
    # Overdue, in no list and not unacked: a suspect, not yet published again.
    first = lost_jobs_recover(now=published + AFTER + 1)
    assert first.suspects == 1 and first.recovered == []
    assert not in_broker_lists(MESSAGE_STATUS.name, job.id)
    # Too soon for the second look.
    assert lost_jobs_recover(now=published + AFTER + 2).recovered == []
    # Still missing a confirmation later: published again under its id.
    second = lost_jobs_recover(now=published + AFTER + CONFIRM + 2)
    assert second.recovered == [job.id] and second.suspects == 0
    assert in_broker_lists(MESSAGE_STATUS.name, job.id)
    assert queue_redis().hlen(LOST_SUSPECTS_KEY) == 0

    start_worker(MESSAGE_STATUS.name)
    wait_until(lambda: record_state(job.id) == records.COMPLETED, timeout=60)
    message.refresh_from_db()
    assert message.status == Message.Status.READ


def test_a_job_waiting_in_its_list_is_never_published_twice():
    job = job_publish("queues.test_job", queue=WEBHOOK, kwargs={"data": {"n": 1}})
    record_written(job.id)
    later = time.time() + AFTER + CONFIRM + 10
    for now in (later, later + CONFIRM + 1, later + 2 * CONFIRM + 2):
        report = lost_jobs_recover(now=now)
        assert report.suspects == 0 and report.recovered == []
    lengths = [queue_redis().llen(key) for key in broker_lists(WEBHOOK.name)]
    assert sum(lengths) == 1


def test_a_job_a_worker_holds_unacked_is_not_lost(start_worker):
    # A worker takes a job due in 30 s and holds it in kombu's unacked hash
    # until then; its record stays delayed. Seen from 100 s later, its time
    # has passed, yet it is held: not a suspect.
    job = job_publish(
        "queues.test_job", queue=WEBHOOK, kwargs={"data": {"n": 2}}, countdown=30
    )
    record_written(job.id)
    start_worker(WEBHOOK.name)
    wait_until(lambda: not in_broker_lists(WEBHOOK.name, job.id), timeout=30)
    wait_until(lambda: queue_redis().hlen("unacked") == 1, timeout=30)
    assert record_state(job.id) == records.DELAYED
    later = time.time() + 100
    assert lost_jobs_recover(now=later).suspects == 0
    assert lost_jobs_recover(now=later + CONFIRM + 1).recovered == []


def test_a_job_that_starts_between_the_two_looks_is_left_alone():
    job = job_publish("queues.test_job", queue=WEBHOOK, kwargs={"data": {"n": 3}})
    record_written(job.id)
    take_like_a_dying_worker(WEBHOOK.name)
    later = time.time() + AFTER + 1
    assert lost_jobs_recover(now=later).suspects == 1
    # It was only between two places after all: its run starts.
    records.record_transition(job_id=job.id, queue=WEBHOOK.name, state=records.ACTIVE)
    report = lost_jobs_recover(now=later + CONFIRM + 1)
    assert report.recovered == [] and report.suspects == 0
    assert not in_broker_lists(WEBHOOK.name, job.id)


def test_a_paused_queue_is_not_swept_until_it_resumes(staff_user):
    job = job_publish("queues.test_job", queue=WEBHOOK, kwargs={"data": {"n": 4}})
    record_written(job.id)
    take_like_a_dying_worker(WEBHOOK.name)
    queue_pause(spec=WEBHOOK, actor=staff_user)
    later = time.time() + AFTER + 1
    assert lost_jobs_recover(now=later).suspects == 0
    assert lost_jobs_recover(now=later + CONFIRM + 1).recovered == []

    queue_resume(spec=WEBHOOK, actor=staff_user)
    assert lost_jobs_recover(now=later + 2 * CONFIRM).suspects == 1
    assert lost_jobs_recover(now=later + 3 * CONFIRM + 1).recovered == [job.id]


def test_a_lost_job_whose_data_was_not_kept_fails_with_the_reason():
    job = job_publish(
        "queues.test_job",
        queue=WEBHOOK,
        kwargs={"data": {"password": "hunter2"}},  # a secret: never kept
    )
    assert record_written(job.id).get("redacted")
    take_like_a_dying_worker(WEBHOOK.name)
    later = time.time() + AFTER + 1
    lost_jobs_recover(now=later)
    report = lost_jobs_recover(now=later + CONFIRM + 1)
    assert report.unrecoverable == [job.id] and report.recovered == []
    detail = job_detail(job.id)
    assert detail["state"] == records.FAILED
    assert detail["error"].startswith("Lost by the broker; not published again:")
    assert queue_redis().llen(TEST_JOB_LOG_KEY) == 0


def test_beat_sweeps_every_minute_from_the_migration():
    from django.apps import apps as django_apps
    from django_celery_beat.models import PeriodicTask

    migration = importlib.import_module("queues.migrations.0003_lost_jobs_schedule")
    migration.provision(django_apps, None)  # again: idempotent
    (task,) = PeriodicTask.objects.filter(task="queues.lost_jobs_recover")
    assert task.enabled
    assert (task.interval.every, task.interval.period) == (1, "minutes")
