"""The queue admin API: JWT + staff, the seed's paths and answers."""

import time

import pytest

from queues import records
from queues.definitions import EMAIL, QUEUES, WEBHOOK, Priority
from queues.models import QueueAction
from queues.publish import job_publish
from queues.selectors import job_detail, queue_stats
from queues.tasks import TEST_JOB_LOG_KEY, queue_test_job
from saas.redis import queue_redis
from tests.utils import wait_until

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/admin/queue/stats/webhook"),
    ("post", "/admin/queue/pause/webhook"),
    ("post", "/admin/queue/resume/webhook"),
    ("post", "/admin/queue/clean/webhook?grace=0&status=completed"),
    ("post", "/admin/queue/retry-failed/webhook"),
    ("get", "/admin/queue/health"),
    ("post", "/admin/queue/test"),
    ("get", "/admin/queue/jobs/some-id"),
    ("delete", "/admin/queue/jobs/some-id"),
    ("post", "/admin/queue/jobs/some-id/retry"),
]


def finished_record(queue, state, job_id, *, age_seconds=0.0, **fields):
    records.record_transition(
        job_id=job_id,
        queue=queue,
        state=state,
        fields={"id": job_id, "queue": queue, "task": "queues.test_job", **fields},
        now=time.time() - age_seconds,
    )


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_anonymous_is_401(api_client, method, path):
    assert getattr(api_client, method)(path, {}, format="json").status_code == 401


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_non_staff_is_403_and_changes_nothing(auth_client, method, path):
    response = getattr(auth_client, method)(path, {}, format="json")
    assert response.status_code == 403
    assert not queue_redis().sismember("queues:paused", WEBHOOK.name)
    assert QueueAction.objects.count() == 0


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/admin/queue/stats/nope"),
        ("post", "/admin/queue/pause/nope"),
        ("post", "/admin/queue/resume/whatsapp:nope"),
        ("post", "/admin/queue/clean/nope?grace=0&status=completed"),
        ("post", "/admin/queue/retry-failed/nope"),
        ("get", "/admin/queue/jobs/no-such-job"),
        ("delete", "/admin/queue/jobs/no-such-job"),
        ("post", "/admin/queue/jobs/no-such-job/retry"),
    ],
)
def test_unknown_queue_or_job_is_404(staff_client, method, path):
    assert getattr(staff_client, method)(path).status_code == 404


@pytest.mark.parametrize("name", ["webhook", "whatsapp:webhook"])
def test_stats_by_alias_or_full_name(staff_client, name):
    job_publish(queue_test_job, kwargs={"data": {}}, priority=Priority.CRITICAL)
    job_publish(queue_test_job, kwargs={"data": {}}, priority=Priority.BACKGROUND)
    finished_record(WEBHOOK.name, "failed", "f1")
    response = staff_client.get(f"/admin/queue/stats/{name}")
    assert response.status_code == 200
    assert response.json() == {
        "queue": "whatsapp:webhook",
        "waiting": 2,
        "active": 0,
        "delayed": 0,
        "completed": 0,
        "failed": 1,
        "paused": False,
    }


def test_pause_and_resume_answer_stats_and_are_logged(staff_client, staff_user):
    paused = staff_client.post("/admin/queue/pause/email")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert queue_stats(EMAIL)["paused"] is True
    resumed = staff_client.post("/admin/queue/resume/notification:email")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    log = list(
        QueueAction.objects.order_by("created_at").values_list("action", "actor")
    )
    assert log == [("pause", staff_user.pk), ("resume", staff_user.pk)]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?status=completed",
        "?grace=-1&status=completed",
        "?grace=abc&status=completed",
        "?grace=0",
        "?grace=0&status=active",
        "?grace=0&status=waiting",
    ],
)
def test_clean_with_bad_grace_or_status_is_400_and_removes_nothing(staff_client, query):
    finished_record(WEBHOOK.name, "completed", "c1", age_seconds=7200)
    response = staff_client.post(f"/admin/queue/clean/webhook{query}")
    assert response.status_code == 400
    assert job_detail("c1") is not None
    assert QueueAction.objects.count() == 0


def test_clean_removes_only_jobs_older_than_grace(staff_client):
    finished_record(WEBHOOK.name, "completed", "old", age_seconds=7200)
    finished_record(WEBHOOK.name, "completed", "new", age_seconds=10)
    finished_record(WEBHOOK.name, "failed", "old-failed", age_seconds=7200)
    response = staff_client.post(
        "/admin/queue/clean/webhook?grace=3600000&status=completed"
    )
    assert response.status_code == 200
    assert response.json() == {
        "queue": "whatsapp:webhook",
        "grace": 3600000,
        "status": "completed",
        "removed": 1,
    }
    assert job_detail("old") is None
    assert job_detail("new") is not None and job_detail("old-failed") is not None
    assert queue_stats(WEBHOOK)["completed"] == 1
    assert QueueAction.objects.get().count == 1


def test_test_job_is_validated_per_queue(staff_client):
    bad = [
        {"queueName": "notification:email", "data": {"to": "not-an-email"}},
        {"queueName": "email", "data": "text"},
        {"queueName": "message-status", "data": {"messageId": "m", "status": "lost"}},
        {"queueName": "outbound", "data": {"to": "0612", "text": "hi"}},
        {"data": {}},
    ]
    for body in bad:
        response = staff_client.post("/admin/queue/test", body, format="json")
        assert response.status_code == 400, body
    unknown = staff_client.post(
        "/admin/queue/test", {"queueName": "nope", "data": {}}, format="json"
    )
    assert unknown.status_code == 404
    assert sum(queue_stats(spec)["waiting"] for spec in QUEUES) == 0


@pytest.mark.django_db(transaction=True)
def test_dry_run_test_job_runs_on_the_named_queue(staff_client, start_worker):
    # Issue 13: without dryRun the test job does the queue's real work
    # (tests/queues/test_test_jobs.py); dryRun is the former no-op.
    data = {
        "to": "test@example.com",
        "subject": "Test",
        "template": "booking_confirmation",
        "data": {},
    }
    response = staff_client.post(
        "/admin/queue/test",
        {"queueName": "notification:email", "data": data, "dryRun": True},
        format="json",
    )
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    assert job_detail(job_id)["queue"] == "notification:email"
    start_worker("notification:email")
    wait_until(lambda: (job_detail(job_id) or {}).get("state") == "completed")
    assert queue_redis().llen(TEST_JOB_LOG_KEY) == 1


def test_retry_and_remove_jobs(staff_client):
    finished_record(
        WEBHOOK.name,
        "failed",
        "f1",
        args="[]",
        kwargs='{"data": {"n": 1}}',
        priority="8",
    )
    finished_record(WEBHOOK.name, "completed", "c1")

    refused = staff_client.post("/admin/queue/jobs/c1/retry")
    assert refused.status_code == 409

    retried = staff_client.post("/admin/queue/jobs/f1/retry")
    assert retried.status_code == 202
    assert job_detail("f1")["state"] == "waiting"
    assert queue_stats(WEBHOOK)["waiting"] == 1  # back in the broker, same id
    assert queue_redis().llen(f"{WEBHOOK.name}\x06\x162") == 1  # priority 8

    removed = staff_client.delete("/admin/queue/jobs/f1")
    assert removed.status_code == 204
    assert job_detail("f1") is None
    assert queue_stats(WEBHOOK)["waiting"] == 0  # gone from the broker too

    assert staff_client.delete("/admin/queue/jobs/c1").status_code == 204
    actions = list(
        QueueAction.objects.order_by("created_at").values_list("action", "job_id")
    )
    assert actions == [("retry", "f1"), ("remove", "f1"), ("remove", "c1")]


def test_retry_all_failed(staff_client):
    for n in range(3):
        finished_record(WEBHOOK.name, "failed", f"f{n}", args="[]", kwargs="{}")
    response = staff_client.post("/admin/queue/retry-failed/webhook")
    assert response.json() == {"queue": "whatsapp:webhook", "retried": 3}
    stats = queue_stats(WEBHOOK)
    assert (stats["failed"], stats["waiting"]) == (0, 3)


def test_job_detail_masks_personal_data(staff_client):
    job = job_publish(
        queue_test_job,
        kwargs={"data": {"to": "ann.smith@example.com", "phone": "+16505551234"}},
    )
    body = staff_client.get(f"/admin/queue/jobs/{job.id}").json()
    assert body["state"] == "waiting"
    assert "ann.smith@example.com" not in body["data"]
    assert "a***@example.com" in body["data"]
    assert "+16505551234" not in body["data"] and "+16******34" in body["data"]
