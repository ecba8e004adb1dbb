"""E-mail rules: checking job data, rendering, logging and queueing."""

import pytest
from django.core.exceptions import ValidationError

from notifications.models import EmailLog
from notifications.services import (
    EMAIL_TEMPLATES,
    EmailJobError,
    email_check,
    email_enqueue,
    email_render,
)
from tests.utils import queued_jobs, run_with_broker_away

EMAIL_QUEUE = "notification:email"

BOOKING_DATA = {
    "customerName": "Maria <b>Gomez</b>",
    "serviceName": "Haircut",
    "serviceDate": "Saturday 5 December 2026, 10:00",
    "salonName": "Studio & Co",
}
TEMPLATE_DATA = {
    "booking_confirmation": BOOKING_DATA,
    "booking_cancelled": BOOKING_DATA,
    "salon_welcome": {"ownerName": "Ana", "salonName": "Studio & Co"},
    "password_reset": {"userName": "ana", "resetToken": "MQ.abc-123"},
}


def queued_email_jobs() -> list[dict]:
    return queued_jobs(EMAIL_QUEUE)


@pytest.mark.parametrize("template", sorted(EMAIL_TEMPLATES))
def test_every_template_renders_subject_text_and_html(template):
    content = email_render(template=template, data=TEMPLATE_DATA[template])
    assert content["subject"] and "\n" not in content["subject"]
    assert content["text"].strip() and "<html" not in content["text"]
    assert content["html"].lstrip().startswith("<!doctype html>")
    for value in TEMPLATE_DATA[template].values():
        if "<" not in value and "&" not in value:
            assert value in content["text"] and value in content["html"]


def test_text_is_verbatim_and_html_is_escaped():
    content = email_render(template="booking_confirmation", data=BOOKING_DATA)
    assert "Maria <b>Gomez</b>" in content["text"]
    assert "Studio & Co" in content["text"]
    assert "Maria &lt;b&gt;Gomez&lt;/b&gt;" in content["html"]
    assert "<b>Gomez" not in content["html"]


def test_explicit_subject_wins_over_the_templates():
    content = email_render(
        template="salon_welcome",
        data=TEMPLATE_DATA["salon_welcome"],
        subject="Hello\nthere",
    )
    assert content["subject"] == "Hello there"


@pytest.mark.parametrize(
    "job, field, words",
    [
        ({"template": "newsletter"}, "template", "Unknown e-mail template"),
        ({"to": "not-an-address"}, "to", "Invalid recipient address"),
        ({"to": None}, "to", "Invalid recipient address"),
        ({"data": {"customerName": "Maria"}}, "data", "needs serviceName"),
        ({"data": "Maria"}, "data", "must be an object"),
    ],
)
def test_bad_job_data_is_named(job, field, words):
    args = {
        "to": "maria@example.com",
        "template": "booking_confirmation",
        "data": BOOKING_DATA,
        **job,
    }
    with pytest.raises(EmailJobError) as caught:
        email_check(**args)
    assert caught.value.field == field and words in str(caught.value)


@pytest.mark.django_db(transaction=True)
def test_enqueue_logs_and_queues_after_commit():
    log = email_enqueue(
        to="maria@example.com", template="booking_confirmation", data=BOOKING_DATA
    )
    assert EmailLog.objects.get().status == EmailLog.Status.QUEUED
    [job] = queued_email_jobs()
    assert job["task"] == "notifications.email_send"
    assert job["kwargs"]["log_id"] == str(log.pk)
    assert job["kwargs"]["data"]["to"] == "maria@example.com"


@pytest.mark.django_db(transaction=True)
def test_enqueue_refuses_bad_data_and_leaves_nothing():
    with pytest.raises(ValidationError) as caught:
        email_enqueue(to="maria@example.com", template="nope", data={})
    assert "template" in caught.value.message_dict
    assert not EmailLog.objects.exists()
    assert queued_email_jobs() == []


BROKER_AWAY_SCRIPT = """
import django
django.setup()
import saas.celery
from notifications.services import email_enqueue
from tests.notifications.test_services import BOOKING_DATA
log = email_enqueue(
    to="maria@example.com", template="booking_confirmation", data=BOOKING_DATA
)
print("logged", log.pk)
"""


@pytest.mark.django_db(transaction=True)
def test_enqueue_in_a_broker_outage_keeps_the_log_and_beat_redrives_it(
    subprocess_env,
):
    """Found by the soak: the publish failed after commit and the request
    answered 500 with the e-mail logged but never sent."""
    from datetime import timedelta

    from notifications.services import emails_redrive

    run = run_with_broker_away(BROKER_AWAY_SCRIPT, env=subprocess_env)
    assert run.returncode == 0 and "logged" in run.stdout, run.stderr[-3000:]
    log = EmailLog.objects.get()
    assert log.status == EmailLog.Status.QUEUED and log.redriven_at is None
    assert "not enqueued" in run.stderr
    assert queued_email_jobs() == []

    assert emails_redrive(older_than=timedelta(hours=1)) == []  # too recent
    assert emails_redrive(older_than=timedelta(0)) == [str(log.pk)]
    [job] = queued_email_jobs()
    assert job["task"] == "notifications.email_send"
    assert job["kwargs"]["log_id"] == str(log.pk)
    assert job["kwargs"]["data"]["template"] == "booking_confirmation"
    assert job["kwargs"]["data"]["data"] == BOOKING_DATA
    log.refresh_from_db()
    assert log.redriven_at is not None
    # Re-driven once per period, not on every beat tick.
    assert emails_redrive(older_than=timedelta(minutes=5)) == []


@pytest.mark.django_db(transaction=True)
def test_two_jobs_for_one_log_send_it_once(smtp_server, settings):
    """A re-driven job racing the late original: the row lock lets one send."""
    import threading

    from django.db import connection

    from notifications.services import email_deliver

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    settings.EMAIL_USE_TLS = False
    log = email_enqueue(
        to="maria@example.com", template="booking_confirmation", data=BOOKING_DATA
    )
    [job] = queued_email_jobs()
    start = threading.Barrier(2)
    results = []

    def deliver():
        start.wait()
        try:
            kwargs = job["kwargs"]
            results.append(
                email_deliver(job=kwargs["data"], log_id=kwargs["log_id"]).status
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == ["sent", "sent"]
    assert len(smtp_server.to("maria@example.com")) == 1
    log.refresh_from_db()
    assert (log.status, log.attempts) == (EmailLog.Status.SENT, 1)
