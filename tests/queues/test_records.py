"""Every job gets a record from publish to finish, written by Celery signals."""

import functools

import pytest

from queues import record_writer, records
from queues.definitions import EMAIL, WEBHOOK, Priority
from queues.publish import job_publish
from queues.selectors import job_detail, queue_jobs, queue_stats
from queues.tasks import queue_test_job
from tests.utils import broker_at, wait_until


def publish(data, *, queue=WEBHOOK, priority=None):
    return job_publish(
        queue_test_job, kwargs={"data": data}, queue=queue, priority=priority
    ).id


def state_of(job_id):
    return (job_detail(job_id) or {}).get("state")


@pytest.mark.django_db
def test_published_job_is_recorded_as_waiting_with_its_data():
    job_id = publish(
        {"salonId": "salon-42", "to": "ann@example.com"},
        queue=EMAIL,
        priority=Priority.CRITICAL,
    )
    job = job_detail(job_id)
    assert job["state"] == "waiting"
    assert job["queue"] == "notification:email"
    assert job["task"] == "queues.test_job"
    assert job["priority"] == "10"
    assert job["salon"] == "salon-42"
    assert "ann@example.com" in job["kwargs"]
    assert job["enqueued_at"]
    page = queue_jobs(EMAIL, "waiting")
    assert [row["id"] for row in page.jobs] == [job_id]


@pytest.mark.django_db(transaction=True)
def test_worker_records_success_failure_and_retries(start_worker):
    ok = publish({"n": 1})
    failing = publish({"fail": "no such salon"})
    flaky = publish({"fail_attempts": 1})
    start_worker("whatsapp:webhook")

    wait_until(lambda: state_of(ok) == "completed", timeout=30)
    wait_until(lambda: state_of(failing) == "failed", timeout=30)
    wait_until(lambda: state_of(flaky) == "completed", timeout=30)

    done = job_detail(ok)
    assert done["attempts"] == "1"
    assert done["worker"].startswith("w0-whatsapp_webhook@")
    assert done["started_at"] and done["finished_at"]
    assert any("Test job ran with {'n': 1}" in line for line in done["log_lines"])

    failed = job_detail(failing)
    assert failed["error"] == "PermanentJobError: no such salon"
    assert "Traceback" in failed["traceback"]
    assert failed["attempts"] == "1"

    retried = job_detail(flaky)
    assert retried["attempts"] == "2"
    assert retried["error"] == "RetryableJobError: attempt 1 fails"
    assert len(retried["log_lines"]) == 2

    stats = queue_stats(WEBHOOK)
    assert (stats["completed"], stats["failed"], stats["active"]) == (2, 1, 0)


def transition(job_id, state, **fields):
    return {
        "job_id": job_id,
        "queue": WEBHOOK.name,
        "state": state,
        "fields": fields,
        "count_attempt": state == "active",
        "duration": None,
        "log_lines": [],
        "now": 1.0,
    }


def test_a_start_and_its_end_in_one_batch_are_written_once():
    batch = [
        transition("a", "active", worker="w1", finished_at=""),
        transition("b", "active", worker="w2"),
        transition("a", "completed", finished_at="t"),
    ]
    folded = record_writer.fold_starts(batch)
    assert [(t["job_id"], t["state"]) for t in folded] == [
        ("b", "active"),
        ("a", "completed"),
    ]
    assert folded[1]["fields"] == {"worker": "w1", "finished_at": "t"}
    assert folded[1]["count_attempt"] is True


@pytest.mark.django_db
def test_batching_writer_writes_what_it_was_handed():
    writer = record_writer.BatchingWriter()
    records.record_transition(
        job_id="x",
        queue=WEBHOOK.name,
        state="active",
        count_attempt=True,
        writer=writer,
    )
    records.record_transition(
        job_id="x", queue=WEBHOOK.name, state="completed", writer=writer, duration=0.01
    )
    assert writer.flush()
    job = job_detail("x")
    assert (job["state"], job["attempts"]) == ("completed", "1")
    assert queue_stats(WEBHOOK)["completed"] == 1


def test_a_publish_written_after_the_job_ran_does_not_move_it_back():
    # The publisher's writer is batched; a worker on another process took the
    # job, ran it and wrote its end first (the soak saw it: a status job
    # completed, its record left "waiting").
    def write(state, now, **fields):
        records.record_transition(
            job_id="late", queue=WEBHOOK.name, state=state, fields=fields, now=now
        )

    write(records.ACTIVE, 100.0)
    write(records.COMPLETED, 100.2, finished_at="t")
    write(records.WAITING, 99.9, enqueued_at="e", kwargs='{"n": 1}')
    job = job_detail("late")
    assert job["state"] == records.COMPLETED
    assert (job["enqueued_at"], job["kwargs"]) == ("e", '{"n": 1}')
    assert queue_stats(WEBHOOK)["waiting"] == 0
    # Published again afterwards (a retry, a re-drive): it waits again.
    write(records.WAITING, 100.5)
    assert job_detail("late")["state"] == records.WAITING
    assert queue_stats(WEBHOOK)["completed"] == 0


def test_a_batch_the_broker_refused_is_written_once_it_is_back(make_redis_server):
    # The broker goes down as a job ends, and comes back as a new instance
    # without the writer's script: the record still reaches it.
    broker = make_redis_server()
    with broker_at(broker.port):
        writer = record_writer.BatchingWriter()
        write = functools.partial(
            records.record_transition, job_id="blip", queue=WEBHOOK.name
        )
        write(state=records.ACTIVE, writer=writer)
        assert writer.flush()
        broker.stop()
        write(state=records.COMPLETED, writer=writer, fields={"finished_at": "t"})
        assert not writer.flush(timeout=0.5)  # still trying
        make_redis_server(port=broker.port)
        assert writer.flush(timeout=10)
        job = job_detail("blip")
        assert job["state"] == records.COMPLETED and job["finished_at"] == "t"


def test_a_job_whose_publish_failed_leaves_no_record_once_the_broker_is_back(
    make_redis_server,
):
    # A worker publishes while the broker is down: the publish fails and the
    # record cannot be deleted; the writer, still trying, must not write it
    # late (the lost-job sweep would publish a job that never was).
    broker = make_redis_server()
    with broker_at(broker.port):
        writer = record_writer.BatchingWriter()
        broker.stop()
        for job_id in ("ghost", "kept"):
            records.record_transition(
                job_id=job_id, queue=WEBHOOK.name, state=records.WAITING, writer=writer
            )
        wait_until(lambda: writer._in_flight == 2, timeout=5)  # being retried
        record_writer.records_discard("ghost")
        make_redis_server(port=broker.port)
        assert writer.flush(timeout=10)
        assert job_detail("ghost") is None
        assert job_detail("kept")["state"] == records.WAITING
