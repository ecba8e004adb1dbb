"""The /admin/queues/ page without JavaScript: staff only, lists, search,
job detail, and every action through plain forms."""

import re
import time

import pytest

from queues import records
from queues.definitions import WEBHOOK
from queues.models import QueueAction
from queues.publish import job_publish
from queues.selectors import job_detail, queue_stats
from queues.tasks import queue_test_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


def failed_job(job_id, *, age=0.0, salon="", data=None):
    records.record_transition(
        job_id=job_id,
        queue=WEBHOOK.name,
        state="failed",
        fields={
            "id": job_id,
            "queue": WEBHOOK.name,
            "task": "queues.test_job",
            "salon": salon,
            "args": "[]",
            "kwargs": f'{{"data": {data or {}}}}'.replace("'", '"'),
            "error": "PermanentJobError: boom",
            "traceback": "Traceback (most recent call last): ...",
            "priority": "5",
        },
        log_lines=["2026-01-01T00:00:00 INFO working on it"],
        now=time.time() - age,
    )


def test_anonymous_and_non_staff_are_sent_to_the_admin_login(client, user):
    for path in ("/admin/queues/", "/admin/queues/webhook/"):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(user)
    response = client.get("/admin/queues/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client.post("/admin/queues/webhook/pause/").status_code == 302
    assert queue_stats(WEBHOOK)["paused"] is False


def test_overview_shows_every_queue_with_counts_and_flower(staff):
    job_publish(queue_test_job, kwargs={"data": {}})
    failed_job("f1")
    html = staff.get("/admin/queues/").content.decode()
    for name in (
        "whatsapp:webhook",
        "whatsapp:message-status",
        "booking:reminder",
        "notification:email",
        "whatsapp:outbound",
        "whatsapp:media",
    ):
        assert f'data-queue="{name}"' in html
    row = re.search(r'data-queue="whatsapp:webhook".*?</tr>', html, re.S).group(0)
    assert '<td class="count-waiting">1</td>' in row
    assert ">1</a></td>" in row  # failed, linked to the failed list
    assert "Open Flower" in html and "<svg" in html
    assert 'id="site-name"' in html  # inside the admin's look


def test_unknown_queue_is_404(staff):
    assert staff.get("/admin/queues/nope/").status_code == 404
    assert staff.get("/admin/queues/jobs/nope/").status_code == 404


def test_search_by_job_id_task_salon_and_data_text(staff):
    failed_job("job-a", salon="salon-1", data={"note": "blue hair"})
    failed_job("job-b", salon="salon-2", data={"note": "red hair"})
    url = "/admin/queues/webhook/?state=failed&q="

    def found(term):
        html = staff.get(url + term).content.decode()
        return sorted(re.findall(r'data-job="([^"]+)"', html))

    assert found("") == ["job-a", "job-b"]
    assert found("job-b") == ["job-b"]
    assert found("salon-1") == ["job-a"]
    assert found("blue") == ["job-a"]
    assert found("queues.test") == ["job-a", "job-b"]
    assert found("nothing-like-it") == []


def test_pagination(staff):
    for n in range(30):
        failed_job(f"j{n:02d}", age=100 - n)
    first = staff.get("/admin/queues/webhook/?state=failed").content.decode()
    second = staff.get("/admin/queues/webhook/?state=failed&page=2").content.decode()
    assert len(re.findall(r'data-job="', first)) == 25
    assert re.findall(r'data-job="([^"]+)"', second) == [
        f"j{n:02d}" for n in range(4, -1, -1)
    ]
    assert "page 2 of 2" in second


def test_job_detail_with_masked_data_log_and_traceback(staff):
    job = job_publish(
        queue_test_job,
        kwargs={"data": {"to": "ann.smith@example.com", "phone": "+16505551234"}},
    )
    html = staff.get(f"/admin/queues/jobs/{job.id}/").content.decode()
    assert "ann.smith@example.com" not in html and "a***@example.com" in html
    assert "+16505551234" not in html and "+16******34" in html
    failed_job("f1")
    html = staff.get("/admin/queues/jobs/f1/").content.decode()
    assert "PermanentJobError: boom" in html
    assert "Traceback (most recent call last)" in html
    assert "working on it" in html


def test_pause_and_resume_through_the_form(staff, staff_user):
    response = staff.post("/admin/queues/webhook/pause/", {"action": "pause"})
    assert response.status_code == 302
    assert queue_stats(WEBHOOK)["paused"] is True
    html = staff.get("/admin/queues/").content.decode()
    assert "paused" in re.search(
        r'data-queue="whatsapp:webhook".*?</tr>', html, re.S
    ).group(0)
    staff.post("/admin/queues/webhook/pause/", {"action": "resume"})
    assert queue_stats(WEBHOOK)["paused"] is False
    assert (
        list(QueueAction.objects.values_list("actor", flat=True)) == [staff_user.pk] * 2
    )


def test_clean_shows_the_count_before_it_runs(staff):
    failed_job("old", age=7200)
    failed_job("new", age=10)
    confirm = staff.get(
        "/admin/queues/webhook/clean/", {"status": "failed", "grace_minutes": "60"}
    ).content.decode()
    assert "Remove 1 failed jobs finished more than 60 minutes ago" in confirm
    assert job_detail("old") is not None  # nothing happened yet
    staff.post(
        "/admin/queues/webhook/clean/",
        {"status": "failed", "grace_minutes": "60", "confirm": "yes"},
    )
    assert job_detail("old") is None and job_detail("new") is not None
    assert QueueAction.objects.get().count == 1


def test_bad_clean_input_changes_nothing(staff):
    failed_job("old", age=7200)
    for params in (
        {"status": "active"},
        {"grace_minutes": "-1"},
        {"grace_minutes": "x"},
    ):
        response = staff.post(
            "/admin/queues/webhook/clean/", {**params, "confirm": "yes"}, follow=True
        )
        assert "Clean needs a grace" in response.content.decode()
    assert job_detail("old") is not None


def test_retry_all_failed_shows_the_count_then_retries(staff):
    failed_job("a")
    failed_job("b")
    confirm = staff.get("/admin/queues/webhook/retry-failed/").content.decode()
    assert "Retry all 2 failed jobs" in confirm
    staff.post("/admin/queues/webhook/retry-failed/", {"confirm": "yes"})
    stats = queue_stats(WEBHOOK)
    assert (stats["failed"], stats["waiting"]) == (0, 2)


def test_retry_and_remove_one(staff):
    failed_job("a")
    failed_job("b")
    staff.post("/admin/queues/jobs/a/action/", {"action": "retry"})
    assert job_detail("a")["state"] == "waiting"
    response = staff.post(
        "/admin/queues/jobs/a/action/", {"action": "retry"}, follow=True
    )
    assert "Only failed jobs can be retried" in response.content.decode()
    staff.post("/admin/queues/jobs/b/action/", {"action": "remove"})
    assert job_detail("b") is None


def test_admin_index_links_to_the_queue_page(staff):
    html = staff.get("/admin/").content.decode()
    assert 'href="/admin/queues/"' in html


@pytest.mark.parametrize(
    "path, prefix",
    [
        ("/admin/queues", "queues/"),
        ("/admin/ops/queues/", "ops/queues/"),
        ("/ops/queues", None),
        ("/admin/", None),
    ],
)
def test_queue_dashboard_path_places_the_page_inside_the_admin(path, prefix):
    from django.test import override_settings

    from queues.admin_views import queue_admin_urls
    from queues.definitions import queue_page_prefix
    from saas.checks import check_queue_dashboard_path

    assert queue_page_prefix(path) == prefix
    with override_settings(QUEUE_DASHBOARD_PATH=path):
        errors = check_queue_dashboard_path()
        routes = [str(url.pattern) for url in queue_admin_urls()]
    assert [e.id for e in errors] == ([] if prefix else ["saas.E002"])
    assert routes[0] == (prefix or "queues/")
