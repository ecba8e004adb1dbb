"""Each queue is its own Redis list; priorities are served most urgent first."""

import json

import pytest
from django.conf import settings

from queues.definitions import QUEUES, Priority, celery_priority, queue_spec
from queues.publish import job_publish
from queues.tasks import TEST_JOB_LOG_KEY, queue_test_job
from saas.redis import queue_redis
from tests.utils import wait_until

PRIORITY_SEP = "\x06\x16"


def broker_list_length(queue_name: str, celery_level: int) -> int:
    key = (
        queue_name if celery_level == 0 else f"{queue_name}{PRIORITY_SEP}{celery_level}"
    )
    return queue_redis().llen(key)


def test_priority_scale_maps_onto_ten_celery_levels():
    assert celery_priority(Priority.CRITICAL) == 0
    assert celery_priority(Priority.BACKGROUND) == 9
    assert celery_priority(Priority.MESSAGE_STATUS) == 2
    assert celery_priority(99) == 0 and celery_priority(-3) == 9
    assert len({celery_priority(p) for p in range(1, 11)}) == 10


def test_aliases_and_full_names_resolve_to_one_spec():
    for spec in QUEUES:
        assert queue_spec(spec.alias) is queue_spec(spec.name) is spec


def test_visibility_timeout_outlasts_every_retry_delay():
    longest = max(spec.longest_retry_delay for spec in QUEUES)
    assert settings.CELERY_VISIBILITY_TIMEOUT > longest
    assert settings.CELERY_VISIBILITY_TIMEOUT > settings.CELERY_TASK_TIME_LIMIT


@pytest.mark.django_db
@pytest.mark.parametrize("spec", QUEUES, ids=lambda s: s.alias)
def test_job_lands_in_its_queue_list(spec):
    job_publish(
        queue_test_job,
        kwargs={"data": {"n": 1}},
        queue=spec,
        priority=Priority.CRITICAL,
    )
    job_publish(
        queue_test_job,
        kwargs={"data": {"n": 2}},
        queue=spec,
        priority=Priority.BACKGROUND,
    )
    assert broker_list_length(spec.name, 0) == 1
    assert broker_list_length(spec.name, 9) == 1
    others = [s for s in QUEUES if s is not spec]
    assert all(
        broker_list_length(o.name, 0) + broker_list_length(o.name, 9) == 0
        for o in others
    )


@pytest.mark.django_db(transaction=True)
def test_worker_serves_priority_ten_before_priority_one(start_worker):
    for n in range(3):
        job_publish(queue_test_job, kwargs={"data": {"p": 1, "n": n}}, priority=1)
    job_publish(queue_test_job, kwargs={"data": {"p": 10, "n": 0}}, priority=10)
    job_publish(queue_test_job, kwargs={"data": {"p": 5, "n": 0}}, priority=5)

    start_worker("whatsapp:webhook", concurrency=1)
    wait_until(lambda: queue_redis().llen(TEST_JOB_LOG_KEY) == 5, timeout=60)

    ran = [
        json.loads(item)
        for item in reversed(queue_redis().lrange(TEST_JOB_LOG_KEY, 0, -1))
    ]
    assert [job["p"] for job in ran] == [10, 5, 1, 1, 1]
