"""Retention (DESIGN.md) is enforced as jobs finish, not only when someone cleans."""

import time

import pytest

from queues import records
from queues.definitions import WEBHOOK
from queues.publish import job_publish
from queues.selectors import job_detail, queue_stats
from queues.tasks import queue_test_job
from tests.utils import wait_until

DAY = 24 * 3600


def finish(job_id, state, *, at):
    records.record_transition(
        job_id=job_id, queue=WEBHOOK.name, state=state, fields={"id": job_id}, now=at
    )


def test_completed_jobs_older_than_a_day_go_when_another_finishes():
    now = time.time()
    finish("old", "completed", at=now - DAY - 60)
    finish("recent", "completed", at=now - DAY + 600)
    finish("new", "completed", at=now)
    assert job_detail("old") is None
    assert job_detail("recent") is not None and job_detail("new") is not None
    assert queue_stats(WEBHOOK)["completed"] == 2


def test_failed_jobs_are_kept_seven_days():
    now = time.time()
    finish("week-old", "failed", at=now - 7 * DAY - 60)
    finish("six-days", "failed", at=now - 6 * DAY)
    finish("new", "failed", at=now)
    assert job_detail("week-old") is None
    assert job_detail("six-days") is not None
    assert queue_stats(WEBHOOK)["failed"] == 2


def test_record_expiry_matches_retention():
    finish("c", "completed", at=time.time())
    finish("f", "failed", at=time.time())
    from saas.redis import queue_redis

    assert DAY - 5 <= queue_redis().ttl(records.job_key("c")) <= DAY
    assert 7 * DAY - 5 <= queue_redis().ttl(records.job_key("f")) <= 7 * DAY
    records.record_transition(job_id="f", queue=WEBHOOK.name, state="waiting")
    assert queue_redis().ttl(records.job_key("f")) == -1  # retried: kept until done


def test_at_most_5000_failed_per_queue_oldest_go_first():
    now = time.time()
    for n in range(5003):
        finish(f"f{n}", "failed", at=now - 5003 + n)
    assert queue_stats(WEBHOOK)["failed"] == 5000
    assert [job_detail(f"f{n}") for n in range(3)] == [None] * 3
    assert job_detail("f3") is not None and job_detail("f5002") is not None


@pytest.mark.django_db(transaction=True)
def test_worker_keeps_at_most_the_configured_completed_count(start_worker):
    # The same script enforces 1,000 in production; a small limit keeps the
    # test short while going through a real worker.
    ids = [job_publish(queue_test_job, kwargs={"data": {"n": n}}).id for n in range(8)]
    start_worker("whatsapp:webhook", env={"QUEUE_COMPLETED_RETENTION_COUNT": "5"})
    wait_until(lambda: queue_stats(WEBHOOK)["waiting"] == 0, timeout=30)
    wait_until(
        lambda: job_detail(ids[-1]) and job_detail(ids[-1])["state"] == "completed",
        timeout=30,
    )
    assert queue_stats(WEBHOOK)["completed"] == 5
    kept = [job_id for job_id in ids if job_detail(job_id)]
    assert kept == ids[3:]  # priority-equal jobs run in order; the oldest went
