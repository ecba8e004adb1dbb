"""Pause holds: across a worker restart, and for a worker started while paused."""

import pytest

from queues.definitions import EMAIL, WEBHOOK
from queues.publish import job_publish
from queues.selectors import job_detail, queue_stats, workers_alive
from queues.services import queue_pause, queue_resume
from queues.tasks import queue_test_job
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def publish(queue, n):
    return job_publish(queue_test_job, kwargs={"data": {"n": n}}, queue=queue).id


def state(job_id):
    return (job_detail(job_id) or {}).get("state")


def drained_sentinel(n):
    """A job on an unpaused queue of the same worker: once it ran, the worker
    was free to take the paused queue's jobs and did not."""
    job_id = publish(EMAIL, n)
    wait_until(lambda: state(job_id) == "completed", timeout=30)


def test_pause_holds_across_worker_restart(start_worker, staff_user):
    queues = ["whatsapp:webhook", "notification:email"]
    first = start_worker(queues, name="pause-a")
    wait_until(lambda: workers_alive(WEBHOOK.name) == [first.name + "@" + host()])

    queue_pause(spec=WEBHOOK, actor=staff_user)
    wait_until(lambda: "Queue whatsapp:webhook is paused" in first.log(), timeout=10)
    held = [publish(WEBHOOK, n) for n in range(3)]
    drained_sentinel(100)
    assert [state(j) for j in held] == ["waiting"] * 3

    first.stop()
    second = start_worker(queues, name="pause-b")  # starts while paused
    drained_sentinel(101)
    drained_sentinel(102)
    assert [state(j) for j in held] == ["waiting"] * 3
    stats = queue_stats(WEBHOOK)
    assert (stats["paused"], stats["waiting"]) == (True, 3)  # still visible
    assert "Queue whatsapp:webhook is paused" in second.log()

    queue_resume(spec=WEBHOOK, actor=staff_user)
    wait_until(lambda: [state(j) for j in held] == ["completed"] * 3, timeout=30)
    assert queue_stats(WEBHOOK)["waiting"] == 0


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_new_worker_on_a_paused_queue_takes_nothing(start_worker, staff_user, pool):
    queue_pause(spec=WEBHOOK, actor=staff_user)
    held = [publish(WEBHOOK, n) for n in range(2)]
    worker = start_worker(
        ["whatsapp:webhook", "notification:email"],
        name="late",
        pool=pool,
        concurrency=2,
    )
    drained_sentinel(1)
    assert [state(j) for j in held] == ["waiting"] * 2
    # Its heartbeat still counts it as the queue's worker.
    assert workers_alive(WEBHOOK.name) == [f"late@{host()}"]
    queue_resume(spec=WEBHOOK, actor=staff_user)
    wait_until(lambda: [state(j) for j in held] == ["completed"] * 2, timeout=30)
    assert "Queue whatsapp:webhook is resumed" in worker.log()


def host():
    import socket

    return socket.gethostname()
