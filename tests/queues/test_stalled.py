"""Issue 13: a consumer connected but not consuming (Celery on Redis after a
broker reconnect) raises queue_stalled while its process and heartbeats look
alive; /metrics exports the age of each queue's last take."""

import re

import pytest
from celery import current_app

from queues.definitions import EMAIL, WEBHOOK
from queues.health import health_report
from queues.publish import job_publish
from queues.selectors import job_detail, workers_alive
from queues.services import queue_pause, queue_resume
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

STALLED_SECONDS = 2.0


@pytest.fixture(autouse=True)
def quick_alerts(settings):
    settings.QUEUE_STALLED_SECONDS = STALLED_SECONDS
    settings.METRICS_CACHE_SECONDS = 0


def stalled_targets() -> set[str]:
    _, body = health_report()
    return {a["target"] for a in body["alerts"] if a["alert"] == "queue_stalled"}


def last_take_age(client, queue) -> float | None:
    text = client.get("/metrics").content.decode()
    match = re.search(
        rf'^queue_last_take_age_seconds{{queue="{re.escape(queue)}"}} (\S+)$',
        text,
        re.M,
    )
    return float(match.group(1)) if match else None


def consuming(host: str, queue: str) -> bool:
    replies = current_app.control.inspect(destination=[host], timeout=2)
    queues = (replies.active_queues() or {}).get(host, [])
    return any(q["name"] == queue for q in queues)


def test_a_cancelled_consumer_with_a_live_worker_is_stalled(
    start_worker, client, staff_user
):
    worker = start_worker([WEBHOOK.name, EMAIL.name], name="stall")
    [host] = wait_until(lambda: workers_alive(WEBHOOK.name))
    current_app.control.cancel_consumer(WEBHOOK.name, destination=[host], reply=True)
    wait_until(lambda: not consuming(host, WEBHOOK.name), timeout=30)

    job = job_publish("queues.test_job", queue=WEBHOOK, kwargs={"data": {}})
    assert WEBHOOK.name not in stalled_targets()  # a job just published: no stall
    wait_until(lambda: WEBHOOK.name in stalled_targets(), timeout=30)
    # The process and its heartbeats look alive all along; the other queue
    # of the same worker is fine, and /metrics tells how long it has been.
    assert worker.alive and workers_alive(WEBHOOK.name) == [host]
    assert EMAIL.name not in stalled_targets()
    assert last_take_age(client, WEBHOOK.name) > STALLED_SECONDS
    assert job_detail(job.id)["state"] == "waiting"
    client.force_login(staff_user)
    row = client.get("/admin/queues/").content.decode()
    row = row[row.index(f'data-queue="{WEBHOOK.name}"') :]
    assert "queues-stalled" in row[: row.index("</tr>")]

    # The control tick leaves a consumer cancelled by hand alone.
    assert not consuming(host, WEBHOOK.name)

    # A paused queue is not stalled.
    queue_pause(spec=WEBHOOK, actor=staff_user)
    assert WEBHOOK.name not in stalled_targets()
    queue_resume(spec=WEBHOOK, actor=staff_user)
    # Resuming consumes the queue again: the job runs and the alert clears.
    wait_until(lambda: job_detail(job.id)["state"] == "completed", timeout=30)
    assert WEBHOOK.name not in stalled_targets()
    assert last_take_age(client, WEBHOOK.name) < STALLED_SECONDS
