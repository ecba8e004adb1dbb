"""Issue 16, high: a password-reset token exists only in the e-mail that is sent.

The attack it closes: a staff member with no other rights asks for a reset of
the superuser's address, opens the e-mail job (log row, queue page, queue API,
Flower's task events, worker logs), copies the token and confirms the reset.
"""

import json
import re

import pytest
from django.test import Client

from notifications.models import EmailLog
from queues.definitions import EMAIL
from saas.redaction import REDACTED
from saas.redis import queue_redis
from tests.conftest import client_for
from tests.factories import UserFactory
from tests.utils import queued_jobs, wait_until

RESET = "/api/auth/password-reset/"
CONFIRM = "/api/auth/password-reset/confirm/"
NEW_PASSWORD = "a-New-passphrase-42"
TOKEN_LINE = re.compile(r"^(\S+\.\S+)$", re.MULTILINE)


def _everything_stored_in_redis() -> str:
    """Every string and hash value on the broker's DB (job records, messages)."""
    client = queue_redis()
    dump = []
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == "hash":
            dump.append(json.dumps(client.hgetall(key)))
        elif kind == "list":
            dump.extend(client.lrange(key, 0, -1))
        elif kind == "string":
            dump.append(client.get(key) or "")
        elif kind == "zset":
            dump.extend(client.zrange(key, 0, -1))
    return "\n".join(dump)


@pytest.mark.django_db(transaction=True)
def test_reset_token_is_only_in_the_sent_mail(api_client, start_worker, smtp_server):
    root = UserFactory(
        username="root", email="root@example.com", is_staff=True, is_superuser=True
    )
    api_client.post(RESET, {"email": "root@example.com"}, format="json")

    # Before any worker: the queued message carries no token, and what task
    # events would show (argsrepr/kwargsrepr headers) carries none either.
    [queued] = queued_jobs(EMAIL.name)
    assert "resetToken" not in json.dumps(queued)
    assert queued["kwargs"]["data"]["data"]["userId"] == root.pk

    worker = start_worker(EMAIL.name, env={"EMAIL_URL": smtp_server.url})
    [mail] = wait_until(lambda: smtp_server.to("root@example.com"), timeout=60)
    token = TOKEN_LINE.search(mail.body("plain").replace("\r\n", "\n")).group(1)
    log = wait_until(
        lambda: EmailLog.objects.filter(status=EmailLog.Status.SENT).first()
    )
    job_id = wait_until(
        lambda: queue_redis().zrange(f"jobs:q:{EMAIL.name}:completed", 0, -1),
        message="the job's completed record",
    )[0]

    assert token not in json.dumps(log.data) and "resetToken" not in log.data
    assert token not in _everything_stored_in_redis()
    assert token not in worker.log()
    # Viewed by another staff member (logging root in would end the token).
    ops = UserFactory(username="ops", is_staff=True, is_superuser=True)
    api_job = client_for(ops).get(f"/admin/queue/jobs/{job_id}")
    assert api_job.status_code == 200 and token not in api_job.content.decode()
    page = Client()
    page.force_login(ops)
    html = page.get(f"/admin/queues/jobs/{job_id}/").content.decode()
    assert job_id in html and token not in html
    admin_log = page.get(f"/admin/notifications/emaillog/{log.pk}/change/")
    assert admin_log.status_code == 200 and token not in admin_log.content.decode()

    # ...and the mailed token still works, once.
    confirmed = api_client.post(
        CONFIRM, {"token": token, "new_password": NEW_PASSWORD}, format="json"
    )
    assert confirmed.status_code == 200
    root.refresh_from_db()
    assert root.check_password(NEW_PASSWORD)


@pytest.mark.django_db(transaction=True)
def test_a_reset_job_naming_another_address_mails_no_token(start_worker, smtp_server):
    """An operator's (or attacker's) job for the superuser's id sent to their own
    address fails without a token; nothing is mailed."""
    from notifications.services import email_enqueue

    root = UserFactory(email="root@example.com", is_superuser=True, is_staff=True)
    log = email_enqueue(
        to="attacker@example.com",
        template="password_reset",
        data={"userName": "root", "userId": root.pk, "resetToken": "guess"},
    )
    assert log.data["resetToken"] == REDACTED
    start_worker(EMAIL.name, env={"EMAIL_URL": smtp_server.url})
    wait_until(
        lambda: (
            EmailLog.objects.filter(pk=log.pk, status=EmailLog.Status.FAILED)
            .exclude(error="")
            .exists()
        ),
        timeout=60,
    )
    assert "own address" in EmailLog.objects.get(pk=log.pk).error
    assert smtp_server.to("attacker@example.com") == []


@pytest.mark.django_db
def test_job_data_errors_and_logs_are_shown_redacted_by_key(staff_client):
    """Records written by anything (an old version, another service) are shown
    with secret-named keys and bearer credentials redacted, on the API."""
    from queues import records

    records.record_transition(
        job_id="j-secret",
        queue=EMAIL.name,
        state=records.FAILED,
        fields={
            "id": "j-secret",
            "queue": EMAIL.name,
            "task": "notifications.email_send",
            "args": "[]",
            "kwargs": json.dumps(
                {"data": {"resetToken": "tok-123", "api_key": "k-9", "to": "x"}}
            ),
            "error": "KeyError: {'password': 'hunter2'}",
            "traceback": "Authorization: Bearer abcdefghijkl.mnop",
        },
        log_lines=["sending with secret=s3cr3t-value"],
    )
    body = staff_client.get("/admin/queue/jobs/j-secret").content.decode()
    for secret in ("tok-123", "k-9", "hunter2", "abcdefghijkl", "s3cr3t-value"):
        assert secret not in body
    assert REDACTED in body


def test_log_lines_are_redacted(caplog):
    import logging

    from saas.logfilters import RedactSecrets

    logger = logging.getLogger("tests.redaction")
    logger.addFilter(RedactSecrets())
    with caplog.at_level(logging.INFO, logger="tests.redaction"):
        logger.info("job data %s", {"resetToken": "MQ.abc-123"})
    assert "MQ.abc-123" not in caplog.text and REDACTED in caplog.text
