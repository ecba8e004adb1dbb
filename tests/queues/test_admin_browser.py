"""The queue page in a real headless browser (Debian's Chromium, driven by
Playwright for Python): log in, see the queues, watch the counts refresh
without a reload, pause a queue, open a job. Screenshots go to tests/artifacts/."""

import importlib
import json
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.db import connections

from queues import records
from queues.definitions import WEBHOOK
from queues.models import QueueAction
from queues.publish import job_publish
from queues.roles import OPERATORS_GROUP
from queues.selectors import job_detail, queue_stats
from queues.tasks import queue_test_job

roles_migration = importlib.import_module(
    "queues.migrations.0002_i13_queue_roles_and_redrive"
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the ORM calls
    # made here (fixtures, teardown) are still plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, settings, django_user_model):
    # The live server speaks plain HTTP; production cookies are Secure.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    ops = django_user_model.objects.create_user(
        username="ops", password="correct-horse-battery", is_staff=True
    )
    # Issue 13: staff need the operating role for the page's buttons.
    roles_migration.create_roles(apps, None)
    ops.groups.add(Group.objects.get(name=OPERATORS_GROUP))
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/queues/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/queues/")
    yield page
    context.close()
    # With playwright's loop running, asgiref gives the ORM calls made here
    # their own connection, which Django's teardown does not see: close it
    # while still in this context, or it outlives the test database.
    connections.close_all()


def count_cell(page, queue: str, state: str):
    return page.locator(f'tr[data-queue="{queue}"] td.count-{state}')


def test_queue_page_in_a_browser(page, live_server):
    ARTIFACTS.mkdir(exist_ok=True)
    assert page.locator("tr[data-queue]").count() == 6  # with whatsapp:media
    assert count_cell(page, WEBHOOK.name, "waiting").inner_text() == "0"
    assert page.locator("#site-name").is_visible()  # the admin's header

    # The page refreshes its counts in place, without a reload.
    page.evaluate("window.__same_document = true")
    for n in range(3):
        job_publish(queue_test_job, kwargs={"data": {"n": n, "salonId": "s-1"}})
    page.wait_for_function(
        "document.querySelector('tr[data-queue=\"whatsapp:webhook\"] td.count-waiting')"
        ".innerText === '3'",
        timeout=20_000,
    )
    assert page.evaluate("window.__same_document") is True
    page.screenshot(path=str(ARTIFACTS / "queues-overview.png"), full_page=True)

    # Pause through the page's form.
    page.locator(f'tr[data-queue="{WEBHOOK.name}"] button[value=pause]').click()
    page.wait_for_selector(".messagelist .success")
    assert queue_stats(WEBHOOK)["paused"] is True
    row = page.locator(f'tr[data-queue="{WEBHOOK.name}"]')
    assert "paused" in row.inner_text()

    # Into the queue, search by salon, open a job.
    page.click(f'tr[data-queue="{WEBHOOK.name}"] th a')
    page.fill("input[name=q]", "s-1")
    page.click("#queue-search button")
    assert page.locator("tr[data-job]").count() == 3
    page.locator("tr[data-job] a").first.click()
    assert page.locator("#job-state").inner_text() == "waiting"
    assert '"salonId": "s-1"' in page.locator("#job-data").inner_text()
    page.screenshot(path=str(ARTIFACTS / "queues-job.png"), full_page=True)
    assert (ARTIFACTS / "queues-overview.png").stat().st_size > 10_000


def failed_record(job_id: str, error: str) -> None:
    records.record_transition(
        job_id=job_id,
        queue=WEBHOOK.name,
        state="failed",
        fields={
            "id": job_id,
            "queue": WEBHOOK.name,
            "task": "queues.test_job",
            "args": "[]",
            "kwargs": '{"data": {"n": 1}}',
            "error": error,
            "priority": "5",
        },
    )


def test_redrive_and_edit_retry_in_a_browser(page, live_server):
    """Issue 13's controls: re-drive by filter (count first, then confirm) and
    edit-and-retry on a failed job's page."""
    ARTIFACTS.mkdir(exist_ok=True)
    failed_record("gone-1", "SMTPServerDisconnected: gone")
    failed_record("bad-1", "PermanentJobError: bad data")
    page.goto(f"{live_server.url}/admin/queues/webhook/?state=failed")
    page.fill("#redrive-form input[name=error]", "disconnected")
    page.click("#redrive-form button")
    assert "Re-drive 1 jobs" in page.locator("#confirm-question").inner_text()
    assert queue_stats(WEBHOOK)["waiting"] == 0  # counting changed nothing
    page.click("input[type=submit][value^=Yes]")
    page.wait_for_selector(".messagelist .success")
    assert "Re-driving 1 jobs" in page.locator(".messagelist").inner_text()
    assert QueueAction.objects.get(action="redrive").count == 1

    page.goto(f"{live_server.url}/admin/queues/jobs/bad-1/")
    page.fill("#edit-retry-data", '{"data": {"n": 2}}')
    page.click("#edit-retry-form button")
    page.wait_for_selector(".messagelist .success")
    assert json.loads(job_detail("bad-1")["kwargs"]) == {"data": {"n": 2}}
    assert job_detail("bad-1")["state"] == "waiting"
    assert "by ops" in page.locator("#job-edited").inner_text()
    page.screenshot(path=str(ARTIFACTS / "queues-edit-retry.png"), full_page=True)
