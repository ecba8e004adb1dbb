"""Issue 13: re-drive by filter (task, time window, error text, data text),
dry run first, at a bounded rate; one logged action each; page, API, command."""

import time
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from queues import records
from queues.definitions import WEBHOOK
from queues.models import QueueAction
from queues.selectors import job_detail, queue_stats
from tests.utils import queued_jobs, wait_until

NOW = time.time()


def record(job_id, *, state="failed", age=60, task="queues.test_job", error="", n=0):
    records.record_transition(
        job_id=job_id,
        queue=WEBHOOK.name,
        state=state,
        fields={
            "id": job_id,
            "queue": WEBHOOK.name,
            "task": task,
            "args": "[]",
            "kwargs": f'{{"data": {{"n": {n}, "salon": "s-{n % 2}"}}}}',
            "error": error,
            "priority": "5",
        },
        now=NOW - age,
    )


@pytest.fixture
def jobs():
    record("a", error="SMTPServerDisconnected: gone", n=1, age=7200)
    record("b", error="SMTPServerDisconnected: gone", n=2, age=600)
    record("c", error="SMTPServerDisconnected: gone", n=3, age=60)
    record("d", error="PermanentJobError: bad template", n=4, age=60)
    record("e", task="queues.noop", error="SMTPServerDisconnected", n=5, age=60)
    record("f", state="completed", n=7, age=60)


def iso(age):
    return datetime.fromtimestamp(NOW - age, UTC).isoformat()


def redrive(client, body, queue="webhook"):
    return client.post(f"/admin/queue/redrive/{queue}", body, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,matched",
    [
        ({}, 5),
        ({"task": "queues.test_job"}, 4),
        ({"error": "smtpserverdisconnected"}, 4),
        ({"error": "SMTP", "task": "queues.test_job", "since": iso(3600)}, 2),
        ({"until": iso(3600)}, 1),
        ({"text": "s-1", "error": "gone"}, 2),  # n = 1, 3
        ({"state": "completed"}, 1),
    ],
)
def test_dry_run_counts_and_changes_nothing(staff_client, jobs, body, matched):
    response = redrive(staff_client, {**body, "dryRun": True})
    assert response.status_code == 200
    assert response.json()["matched"] == matched
    assert queue_stats(WEBHOOK)["waiting"] == 0
    assert not QueueAction.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,field",
    [
        ({"state": "active"}, "state"),
        ({"since": "yesterday"}, "since"),
        ({"since": iso(60), "until": iso(600)}, "until"),
        ({"rate": 0}, "rate"),
        ({"rate": "fast"}, "rate"),
    ],
)
def test_bad_filter_is_400_and_changes_nothing(staff_client, jobs, body, field):
    response = redrive(staff_client, body)
    assert response.status_code == 400 and field in response.json()
    assert queue_stats(WEBHOOK)["waiting"] == 0
    assert not QueueAction.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_redrive_publishes_the_matches_at_a_bounded_rate(
    staff_client, staff_user, jobs, start_worker
):
    body = {"error": "gone", "task": "queues.test_job", "rate": 4}
    response = redrive(staff_client, body)
    assert response.status_code == 202
    assert response.json()["matched"] == 3
    start_worker(WEBHOOK.name, concurrency=2)
    wait_until(
        lambda: [job_detail(j)["state"] for j in "abc"] == ["completed"] * 3,
        timeout=60,
    )
    assert [job_detail(j)["state"] for j in "def"] == ["failed", "failed", "completed"]
    # Paced: the third publish came 2/4 s after the first started (less the
    # time the first publish took before its record was stamped).
    enqueued = sorted(
        datetime.fromisoformat(job_detail(j)["enqueued_at"]) for j in "abc"
    )
    assert (enqueued[-1] - enqueued[0]).total_seconds() >= 0.4
    action = QueueAction.objects.get()
    assert (action.action, action.count, action.actor) == ("redrive", 3, staff_user)
    assert action.params["filter"] == {
        "state": "failed",
        "task": "queues.test_job",
        "error": "gone",
    }
    assert action.params["rate"] == 4


@pytest.mark.django_db
def test_redrive_from_the_page(client, staff_user, jobs):
    client.force_login(staff_user)
    url = "/admin/queues/webhook/redrive/"
    page = client.get(url, {"state": "failed", "error": "gone", "rate": "50"})
    assert page.status_code == 200
    assert 'value="Yes, 3 jobs"' in page.content.decode()
    assert queue_stats(WEBHOOK)["waiting"] == 0
    bad = client.get(url, {"since": "nope"}, follow=True)
    assert "not a date" in bad.content.decode()
    client.post(url, {"state": "failed", "error": "gone", "confirm": "yes"})
    action = QueueAction.objects.get()
    assert (action.action, action.count) == ("redrive", 3)
    [job] = queued_jobs(WEBHOOK.name, task="queues.jobs_redrive")
    assert sorted(job["kwargs"]["job_ids"]) == ["a", "b", "c"]


@pytest.mark.django_db
def test_redrive_command(jobs):
    def run(*args):
        out = StringIO()
        call_command("queue_redrive", "webhook", *args, stdout=out)
        return out.getvalue()

    assert "Would re-drive 2 jobs" in run(
        "--error", "gone", "--text", "s-1", "--dry-run"
    )
    assert not QueueAction.objects.exists()
    assert "Re-drove 2 jobs" in run("--error", "gone", "--text", "s-1", "--rate", "100")
    assert queue_stats(WEBHOOK)["waiting"] == 2
    assert {job_detail(j)["state"] for j in "ac"} == {"waiting"}
    action = QueueAction.objects.get()
    assert action.actor_name.startswith("manage.py queue_redrive")
    with pytest.raises(CommandError):
        run("--state", "active")
    with pytest.raises(CommandError):
        run("--since", "soon")
