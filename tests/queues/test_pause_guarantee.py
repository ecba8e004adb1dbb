"""Issue 13: a pause holds the moment it is acknowledged, with live workers.

The workers poll the flags once a second; these tests publish within that
second, so only the check as a job is about to start (queues/requests.py)
keeps the jobs from running.
"""

import json
import uuid

import pytest
from celery import current_app

from queues.definitions import EMAIL, WEBHOOK
from queues.keys import TEST_JOB_LOG_KEY
from queues.publish import job_publish
from queues.selectors import job_detail, queue_stats, workers_alive
from queues.services import queue_pause, queue_resume
from saas.redis import queue_redis
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 4
JOBS = 50


def consuming(workers) -> dict[str, bool]:
    """Whether each worker's consumer takes whatsapp:webhook (remote control)."""
    replies = current_app.control.inspect(
        destination=workers, timeout=2
    ).active_queues()
    replies = replies or {}
    return {
        name: any(q["name"] == WEBHOOK.name for q in replies.get(name, []))
        for name in workers
    }


def ran() -> list[int]:
    return [
        json.loads(raw)["n"] for raw in queue_redis().lrange(TEST_JOB_LOG_KEY, 0, -1)
    ]


@pytest.mark.parametrize("broadcast", ["delivered", "missed"])
def test_pause_holds_at_once_for_jobs_published_right_after(
    start_worker, staff_user, monkeypatch, broadcast
):
    if broadcast == "missed":
        # Remote control rides Redis pub/sub, which drops messages for a
        # worker that is reconnecting: only the check at start is left.
        monkeypatch.setattr("queues.services._broadcast", lambda command, spec: None)
    names = [
        start_worker([WEBHOOK.name, EMAIL.name], name="hold-a", concurrency=2).name,
        start_worker([WEBHOOK.name], name="hold-b", pool="threads", concurrency=4).name,
    ]
    hosts = wait_until(
        lambda: len(workers_alive(WEBHOOK.name)) == 2 and workers_alive(WEBHOOK.name)
    )
    assert all(h.split("@")[0] in names for h in hosts)
    for round_number in range(ROUNDS):
        wait_until(lambda: all(consuming(hosts).values()), timeout=30)
        queue_redis().delete(TEST_JOB_LOG_KEY)
        first = round_number * JOBS

        queue_pause(spec=WEBHOOK, actor=staff_user)
        ids = [str(uuid.uuid4()) for _ in range(JOBS)]
        with current_app.producer_or_acquire() as producer:
            for i, job_id in enumerate(ids):
                job_publish(
                    "queues.test_job",
                    queue=WEBHOOK,
                    kwargs={"data": {"n": first + i}},
                    job_id=job_id,
                    producer=producer,
                )

        # Every worker has stopped consuming the queue: nothing can start now.
        wait_until(lambda: not any(consuming(hosts).values()), timeout=30)
        wait_until(lambda: queue_stats(WEBHOOK)["waiting"] == JOBS, timeout=30)
        assert ran() == []
        records = [job_detail(job_id) for job_id in ids]
        assert {r["state"] for r in records} == {"waiting"}
        assert all(not r.get("attempts") and not r.get("started_at") for r in records)

        queue_resume(spec=WEBHOOK, actor=staff_user)
        wait_until(
            lambda ids=ids: all(job_detail(j)["state"] == "completed" for j in ids),
            timeout=60,
            message=f"round {round_number}: all jobs ran after resume",
        )
        assert sorted(ran()) == list(range(first, first + JOBS))  # each once
        assert {job_detail(j)["attempts"] for j in ids} == {"1"}
