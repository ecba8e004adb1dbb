"""notification:email end to end: a real worker, a real SMTP server (aiosmtpd)."""

import pytest

from notifications.models import EmailLog
from notifications.services import email_enqueue
from notifications.tasks import email_send
from queues.definitions import EMAIL
from queues.publish import job_publish
from tests.factories import UserFactory
from tests.notifications.test_services import BOOKING_DATA, TEMPLATE_DATA
from tests.processes import free_port
from tests.smtp import SMTPServer
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

EXPECTED = {
    "booking_confirmation": (
        "Booking confirmed: Haircut on Saturday 5 December 2026, 10:00",
        "Your booking at Studio & Co is confirmed.",
        "Your booking at <strong>Studio &amp; Co</strong> is confirmed.",
    ),
    "booking_cancelled": (
        "Booking cancelled: Haircut on Saturday 5 December 2026, 10:00",
        "Your booking at Studio & Co has been cancelled.",
        "Your booking at <strong>Studio &amp; Co</strong> has been cancelled.",
    ),
    "salon_welcome": (
        "Welcome to Salon, Studio & Co is ready",
        "Studio & Co is set up. Next steps:",
        "<strong>Studio &amp; Co</strong> is set up. Next steps:",
    ),
    # The token is made by the worker at send time (issue 16), never taken
    # from the job's data.
    "password_reset": (
        "Reset your Salon password",
        "Someone asked to reset the password of your Salon account.",
        '<p style="font-family: monospace; font-size: 16px; background: #f4f4f4; '
        'padding: 12px;">',
    ),
}


def email_worker(start_worker, port: int):
    return start_worker(EMAIL.name, env={"EMAIL_URL": f"smtp://127.0.0.1:{port}"})


def log_of(log_id) -> EmailLog:
    return EmailLog.objects.get(pk=log_id)


def test_every_template_is_delivered_with_subject_and_both_bodies(
    start_worker, smtp_server
):
    ana = UserFactory(username="ana", email="password_reset@example.com")
    data_of = {**TEMPLATE_DATA, "password_reset": {"userName": "ana", "userId": ana.pk}}
    logs = {
        template: email_enqueue(
            to=f"{template}@example.com", template=template, data=data
        )
        for template, data in data_of.items()
    }
    email_worker(start_worker, smtp_server.port)
    wait_until(lambda: len(smtp_server.received) == 4, timeout=60)

    for template, (subject, text, html) in EXPECTED.items():
        [mail] = smtp_server.to(f"{template}@example.com")
        assert mail.subject == subject
        assert text in mail.body("plain")
        assert html in mail.body("html")
        assert mail.mail_from == "no-reply@localhost"
        log = log_of(logs[template].pk)
        assert log.status == EmailLog.Status.SENT
        assert log.attempts == 1 and log.error == "" and log.sent_at
        assert log.subject == subject
    # Booking data's markup is escaped in HTML, kept verbatim in text.
    [confirmation] = smtp_server.to("booking_confirmation@example.com")
    assert "Maria <b>Gomez</b>" in confirmation.body("plain")
    assert "Maria &lt;b&gt;Gomez&lt;/b&gt;" in confirmation.body("html")


def test_seed_shaped_job_without_a_log_is_logged_and_sent(start_worker, smtp_server):
    job_publish(
        email_send,
        kwargs={
            "data": {
                "to": "customer@example.com",
                "subject": "Booking Confirmation",
                "template": "booking_confirmation",
                "data": BOOKING_DATA,
                "priority": 7,
            }
        },
    )
    email_worker(start_worker, smtp_server.port)
    [mail] = wait_until(lambda: smtp_server.to("customer@example.com"), timeout=60)
    assert mail.subject == "Booking Confirmation"
    log = wait_until(lambda: EmailLog.objects.filter(status="sent").first())
    assert (log.to, log.template, log.attempts) == (
        "customer@example.com",
        "booking_confirmation",
        1,
    )


@pytest.mark.parametrize(
    "job, error",
    [
        (
            {"template": "newsletter"},
            "Unknown e-mail template 'newsletter'; expected one of",
        ),
        ({"to": "maria@@example"}, "Invalid recipient address 'maria@@example'."),
        (
            {"data": {"customerName": "Maria", "salonName": "S"}},
            "Template 'booking_confirmation' needs serviceName, serviceDate",
        ),
    ],
    ids=["unknown-template", "bad-address", "missing-variable"],
)
def test_bad_job_fails_at_once_without_retries(start_worker, smtp_server, job, error):
    data = {
        "to": "maria@example.com",
        "subject": "",
        "template": "booking_confirmation",
        "data": BOOKING_DATA,
        "priority": 7,
        **job,
    }
    job_publish(email_send, kwargs={"data": data})
    worker = email_worker(start_worker, smtp_server.port)

    wait_until(lambda: "raised unexpected: PermanentJobError" in worker.log())
    log = EmailLog.objects.get()
    assert log.status == EmailLog.Status.FAILED and log.attempts == 1
    assert error in log.error
    assert "Retry in" not in worker.log()
    assert smtp_server.received == []


def test_smtp_down_is_retried_with_backoff_then_delivered(start_worker):
    port = free_port()  # nothing listens here yet
    log = email_enqueue(
        to="maria@example.com", template="booking_confirmation", data=BOOKING_DATA
    )
    worker = email_worker(start_worker, port)
    wait_until(lambda: log_of(log.pk).attempts == 1, timeout=30)
    first = log_of(log.pk)
    assert first.status == EmailLog.Status.QUEUED
    assert "ConnectionRefusedError" in first.error
    wait_until(lambda: "Retry in 5s" in worker.log())

    server = SMTPServer(port=port).start()
    try:
        [mail] = wait_until(lambda: server.to("maria@example.com"), timeout=30)
    finally:
        server.stop()
    assert mail.subject.startswith("Booking confirmed: Haircut")
    delivered = wait_until(
        lambda: (row := log_of(log.pk)).status == EmailLog.Status.SENT and row
    )
    assert delivered.attempts == 2 and delivered.error == ""


def test_smtp_down_for_good_fails_after_three_attempts(start_worker):
    log = email_enqueue(
        to="maria@example.com",
        template="salon_welcome",
        data=TEMPLATE_DATA["salon_welcome"],
    )
    worker = email_worker(start_worker, free_port())
    # Backoff 5 s then 10 s: the third attempt lands about 15 s in.
    failed = wait_until(
        lambda: (row := log_of(log.pk)).status == EmailLog.Status.FAILED and row,
        timeout=60,
    )
    assert failed.attempts == 3
    assert failed.error.startswith("gave up after 3 attempts: ConnectionRefusedError")
    assert worker.log().count("Retry in") == 2
