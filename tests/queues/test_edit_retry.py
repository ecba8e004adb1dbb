"""Issue 13: a failed job retried with corrected data, from the API and the
job page; the original data and who changed it stay in the record and log."""

import json
import time

import pytest

from notifications.services import EMAIL_SEND_TASK
from queues import records
from queues.definitions import EMAIL, WEBHOOK
from queues.models import QueueAction
from queues.publish import job_publish
from queues.selectors import job_detail, queue_stats
from tests.notifications.test_services import BOOKING_DATA
from tests.utils import queued_jobs, wait_until

GOOD = {
    "to": "fixed@example.com",
    "subject": "Your booking",
    "template": "booking_confirmation",
    "data": BOOKING_DATA,
}


def state(job_id):
    return (job_detail(job_id) or {}).get("state")


@pytest.mark.django_db(transaction=True)
def test_a_failed_email_retried_with_corrected_data_is_delivered(
    staff_client, staff_user, start_worker, smtp_server
):
    bad = {**GOOD, "to": "fixed-at-example.com"}
    job = job_publish(EMAIL_SEND_TASK, queue=EMAIL, kwargs={"data": bad})
    start_worker(EMAIL.name, env={"EMAIL_URL": smtp_server.url})
    wait_until(lambda: state(job.id) == "failed", timeout=60)

    refused = staff_client.post(
        f"/admin/queue/jobs/{job.id}/retry",
        {"data": {"data": {**GOOD, "template": "nope"}}},
        format="json",
    )
    assert refused.status_code == 400 and "data" in refused.json()
    assert state(job.id) == "failed" and not QueueAction.objects.exists()

    response = staff_client.post(
        f"/admin/queue/jobs/{job.id}/retry", {"data": {"data": GOOD}}, format="json"
    )
    assert response.status_code == 202
    wait_until(lambda: state(job.id) == "completed", timeout=60)
    [mail] = smtp_server.to("fixed@example.com")
    assert mail.subject == "Your booking"
    record = job_detail(job.id)
    assert json.loads(record["original_kwargs"]) == {"data": bad}
    assert json.loads(record["kwargs"]) == {"data": GOOD}
    assert record["edited_by"] == staff_user.get_username()
    assert record["attempts"] == "2"
    action = QueueAction.objects.get()
    assert (action.action, action.job_id, action.actor) == (
        "edit_retry",
        job.id,
        staff_user,
    )
    assert action.params["original"] == {"data": bad}
    assert action.params["data"] == {"data": GOOD}


def failed(job_id, task="queues.test_job", kwargs='{"data": {"n": 1}}'):
    records.record_transition(
        job_id=job_id,
        queue=WEBHOOK.name,
        state="failed",
        fields={
            "id": job_id,
            "queue": WEBHOOK.name,
            "task": task,
            "args": "[]",
            "kwargs": kwargs,
            "priority": "5",
        },
        now=time.time() - 5,
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "task,data",
    [
        ("queues.test_job", "text"),
        ("queues.test_job", {"other": 1}),
        ("messaging.webhook_event_process", {"event_id": 1, "extra": 2}),
        ("messaging.webhook_event_process", {}),
        ("messaging.message_test_send", {"salon_id": "x", "to": "1", "text": "t"}),
        (EMAIL_SEND_TASK, {"data": {"to": "a@example.com"}}),
    ],
)
def test_bad_corrected_data_is_400_and_changes_nothing(staff_client, task, data):
    failed("f1", task=task)
    response = staff_client.post(
        "/admin/queue/jobs/f1/retry", {"data": data}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "data" in response.json()
    assert state("f1") == "failed" and queue_stats(WEBHOOK)["waiting"] == 0
    assert "original_kwargs" not in job_detail("f1")
    assert not QueueAction.objects.exists()


@pytest.mark.django_db
def test_only_failed_jobs_can_be_edited(staff_client):
    records.record_transition(
        job_id="c1",
        queue=WEBHOOK.name,
        state="completed",
        fields={"task": "queues.test_job"},
    )
    response = staff_client.post(
        "/admin/queue/jobs/c1/retry", {"data": {"data": {}}}, format="json"
    )
    assert response.status_code == 409
    assert state("c1") == "completed"


@pytest.mark.django_db
def test_edit_and_retry_from_the_job_page(client, staff_user):
    failed("f1")
    client.force_login(staff_user)
    html = client.get("/admin/queues/jobs/f1/").content.decode()
    assert 'id="edit-retry-form"' in html
    url = "/admin/queues/jobs/f1/action/"
    bad = client.post(url, {"action": "edit_retry", "data": "{not json"}, follow=True)
    assert "not JSON" in bad.content.decode() and state("f1") == "failed"
    client.post(url, {"action": "edit_retry", "data": '{"data": {"n": 2}}'})
    assert state("f1") == "waiting"
    [queued] = queued_jobs(WEBHOOK.name)
    assert queued["kwargs"] == {"data": {"n": 2}}
    html = client.get("/admin/queues/jobs/f1/").content.decode()
    assert 'id="job-edited"' in html and staff_user.get_username() in html
