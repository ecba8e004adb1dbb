"""Issue 13: the two roles over every queue API operation and page action.

Anonymous: 401 (API) or the admin login (page); staff without a queue
permission: 403; "Queue viewers": reads 200, writes 403; "Queue operators"
and superusers: everything."""

import importlib
import time

import pytest
from django.apps import apps
from django.contrib.auth.models import Group

from queues import records
from queues.definitions import WEBHOOK
from queues.models import QueueAction
from queues.roles import OPERATORS_GROUP, VIEWERS_GROUP
from queues.selectors import queue_stats
from tests.conftest import client_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

roles_migration = importlib.import_module(
    "queues.migrations.0002_i13_queue_roles_and_redrive"
)


def failed(job_id):
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
        },
        now=time.time() - 10,
    )


@pytest.fixture(autouse=True)
def roles():
    # A transactional test elsewhere may have flushed the migration's rows.
    roles_migration.create_roles(apps, None)
    failed("f1")
    failed("f2")


def member_of(group):
    user = UserFactory(is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


#: (method, path, body, what an operator gets); reads are GETs.
API = [
    ("get", "/admin/queue/stats/webhook", None, 200),
    ("get", "/admin/queue/health", None, 200),
    ("get", "/admin/queue/jobs/f1", None, 200),
    ("post", "/admin/queue/pause/webhook", None, 200),
    ("post", "/admin/queue/resume/webhook", None, 200),
    ("post", "/admin/queue/clean/webhook?grace=0&status=completed", None, 200),
    ("post", "/admin/queue/retry-failed/webhook", None, 200),
    ("post", "/admin/queue/test", {"queueName": "webhook", "dryRun": True}, 202),
    ("post", "/admin/queue/jobs/f1/retry", None, 202),
    ("post", "/admin/queue/redrive/webhook", {"dryRun": True}, 200),
    ("post", "/admin/queue/redrive/webhook", {"task": "none"}, 202),
    ("delete", "/admin/queue/jobs/f2", None, 204),
]


def call(client, method, path, body):
    return getattr(client, method)(path, body or {}, format="json")


@pytest.mark.parametrize("method,path,body,operator", API)
def test_api_role_matrix(api_client, method, path, body, operator):
    read = method == "get"
    assert call(api_client, method, path, body).status_code == 401
    for group, expected in [
        (None, 403),
        (VIEWERS_GROUP, 200 if read else 403),
        (OPERATORS_GROUP, operator),
    ]:
        response = call(client_for(member_of(group)), method, path, body)
        assert response.status_code == expected, (group, response.content)
        if group != OPERATORS_GROUP:
            assert QueueAction.objects.count() == 0
            assert queue_stats(WEBHOOK)["failed"] == 2
    failed("f1")  # as it was before the operator acted
    failed("f2")
    superuser = UserFactory(is_staff=True, is_superuser=True)
    assert call(client_for(superuser), method, path, body).status_code == operator


def test_a_viewer_sees_the_data_masked():
    records.record_transition(
        job_id="p1",
        queue=WEBHOOK.name,
        state="waiting",
        fields={"kwargs": '{"data": {"to": "ann.smith@example.com"}}', "args": "[]"},
    )
    body = client_for(member_of(VIEWERS_GROUP)).get("/admin/queue/jobs/p1").json()
    assert "ann.smith@example.com" not in body["data"] and "a***@" in body["data"]


PAGE_READS = ["/admin/queues/", "/admin/queues/webhook/", "/admin/queues/jobs/f1/"]
PAGE_WRITES = [
    ("/admin/queues/jobs/f1/action/", {"action": "retry"}),
    ("/admin/queues/jobs/f2/action/", {"action": "remove"}),
    ("/admin/queues/webhook/pause/", {"action": "pause"}),
    (
        "/admin/queues/webhook/clean/",
        {"status": "failed", "grace_minutes": "0", "confirm": "yes"},
    ),
    ("/admin/queues/webhook/retry-failed/", {"confirm": "yes"}),
    ("/admin/queues/webhook/redrive/", {"task": "none", "confirm": "yes"}),
]
BUTTONS = (
    'value="pause"',
    'id="bulk-actions"',
    'id="redrive-form"',
    'value="retry"',
    'value="remove"',
    'id="edit-retry-form"',
)


def page_html(client, path):
    response = client.get(path + ("?state=failed" if path.endswith("webhook/") else ""))
    assert response.status_code == 200
    return response.content.decode()


def test_page_role_matrix(client):
    for path in PAGE_READS:
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]

    client.force_login(member_of(None))
    for path in PAGE_READS:
        assert client.get(path).status_code == 403
    for path, data in PAGE_WRITES:
        assert client.post(path, data).status_code == 403

    client.force_login(member_of(VIEWERS_GROUP))
    shown = "".join(page_html(client, path) for path in PAGE_READS)
    assert not any(button in shown for button in BUTTONS)
    assert "clean-form" not in shown
    for path, data in PAGE_WRITES:
        assert client.post(path, data).status_code == 403
    assert client.get("/admin/queues/webhook/clean/?status=failed").status_code == 403
    assert client.get("/admin/queues/webhook/redrive/").status_code == 403
    assert QueueAction.objects.count() == 0 and queue_stats(WEBHOOK)["failed"] == 2
    assert queue_stats(WEBHOOK)["paused"] is False

    client.force_login(member_of(OPERATORS_GROUP))
    shown = "".join(page_html(client, path) for path in PAGE_READS)
    assert all(button in shown for button in BUTTONS)
    for path, data in PAGE_WRITES:
        assert client.post(path, data).status_code in (200, 302), path
    assert queue_stats(WEBHOOK)["paused"] is True
    assert QueueAction.objects.count() == 6


def test_the_migration_makes_both_groups():
    Group.objects.filter(name__in=[VIEWERS_GROUP, OPERATORS_GROUP]).delete()
    roles_migration.create_roles(apps, None)
    perms = {
        group.name: sorted(group.permissions.values_list("codename", flat=True))
        for group in Group.objects.filter(name__in=[VIEWERS_GROUP, OPERATORS_GROUP])
    }
    assert perms == {
        VIEWERS_GROUP: ["view_queues"],
        OPERATORS_GROUP: ["operate_queues", "view_queues"],
    }
