"""E-mail: check, log and enqueue (callers' side); render and send (the job's).

Job data keeps the seed's shape: {"to", "subject", "template", "data", "priority"},
with the template's variables in ``data`` under the seed's names (customerName,
serviceName, serviceDate, ...).
"""

import logging
import smtplib
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from notifications.models import EmailLog
from queues.definitions import (
    EMAIL,
    PermanentJobError,
    Priority,
    RetryableJobError,
)
from queues.publish import job_publish
from saas.passwords import password_reset_recipient, password_reset_token
from saas.redaction import redact_data
from saas.services import rows_claim_for_redrive

logger = logging.getLogger(__name__)

#: The job of notification:email (notifications/tasks.py), published by name.
EMAIL_SEND_TASK = "notifications.email_send"

#: Each template and the variables it cannot do without.
EMAIL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "booking_confirmation": ("customerName", "serviceName", "serviceDate", "salonName"),
    "booking_cancelled": ("customerName", "serviceName", "serviceDate", "salonName"),
    "salon_welcome": ("ownerName", "salonName"),
    "password_reset": ("userName", "userId"),
}

#: Variables a worker adds at send time, from the data: never stored, never
#: shown. A reset token exists only in the e-mail it is sent in.
SEND_TIME_SECRETS = {"password_reset": "resetToken"}


class EmailJobError(ValueError):
    """Job data no retry can fix: unknown template, bad address, missing variable."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def email_check(*, to: Any, template: Any, data: Any) -> None:
    """Raise EmailJobError naming the first thing wrong with a job."""
    if template not in EMAIL_TEMPLATES:
        raise EmailJobError(
            "template",
            f"Unknown e-mail template {template!r}; expected one of "
            f"{', '.join(EMAIL_TEMPLATES)}.",
        )
    try:
        validate_email(to if isinstance(to, str) else "")
    except ValidationError:
        raise EmailJobError("to", f"Invalid recipient address {to!r}.") from None
    if not isinstance(data, dict):
        raise EmailJobError("data", "The template data must be an object.")
    missing = [
        name for name in EMAIL_TEMPLATES[template] if data.get(name) in (None, "")
    ]
    if missing:
        raise EmailJobError(
            "data",
            f"Template {template!r} needs {', '.join(missing)} in its data.",
        )


def email_render(*, template: str, data: dict, subject: str = "") -> dict[str, str]:
    """Subject, text and HTML of a checked job (an explicit subject wins)."""
    base = f"emails/{template}"
    rendered_subject = " ".join(render_to_string(f"{base}/subject.txt", data).split())
    return {
        "subject": " ".join(subject.split()) or rendered_subject,
        "text": render_to_string(f"{base}/body.txt", data),
        "html": render_to_string(f"{base}/body.html", data),
    }


@transaction.atomic
def email_enqueue(
    *,
    to: str,
    template: str,
    data: dict[str, Any],
    subject: str = "",
    priority: int = Priority.EMAIL,
    job_id: str | None = None,
) -> EmailLog:
    """Log an e-mail and queue it on notification:email after commit (under
    ``job_id`` when given: the queue page's test job follows its job).

    Bad job data is refused here with a ValidationError naming the field, and
    nothing is logged or queued.
    """
    try:
        email_check(to=to, template=template, data=data)
    except EmailJobError as exc:
        raise ValidationError({exc.field: str(exc)}) from None
    log = EmailLog.objects.create(
        template=template,
        to=to,
        subject=subject,
        data=redact_data(data),
        priority=priority,
    )
    transaction.on_commit(lambda: _email_publish(log, job_id=job_id))
    return log


def _email_publish(log: EmailLog, *, job_id: str | None = None) -> None:
    """Publish the log's job; in a broker outage the log stays queued until
    beat re-drives it."""
    job_publish(
        EMAIL_SEND_TASK,
        queue=EMAIL,
        durable=f"E-mail {log.pk}",
        kwargs={
            "data": {
                "to": log.to,
                "subject": log.subject,
                "template": log.template,
                "data": log.data,
                "priority": log.priority,
            },
            "log_id": str(log.pk),
        },
        priority=log.priority,
        job_id=job_id,
    )


def emails_redrive(*, older_than: timedelta, limit: int = 500) -> list[str]:
    """Enqueue again the queued e-mails untouched for ``older_than`` and not
    re-driven within that time (their enqueue failed, or their job was lost).
    A job that was only late finds its log sent and does nothing."""
    logs = rows_claim_for_redrive(
        EmailLog.objects.filter(status=EmailLog.Status.QUEUED),
        stale_field="updated_at",
        older_than=older_than,
        order_by="created_at",
        limit=limit,
    )
    for log in logs:
        _email_publish(log)
    if logs:
        logger.warning("Re-drove %d queued e-mails", len(logs))
    return [str(log.pk) for log in logs]


def _log_for_job(job: dict, log_id: str | None) -> EmailLog:
    if log_id:
        log = EmailLog.objects.filter(pk=log_id).first()
        if log is not None:
            return log
    # A job published without our log (the queue test endpoint, another
    # service): log it now so every send is visible.
    return EmailLog.objects.create(
        template=str(job.get("template", ""))[:64],
        to=str(job.get("to", ""))[:254],
        subject=str(job.get("subject") or "")[:255],
        data=redact_data(job["data"]) if isinstance(job.get("data"), dict) else {},
        priority=_int_or(job.get("priority"), Priority.EMAIL),
    )


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _fail(log: EmailLog, error: str) -> None:
    log.status = EmailLog.Status.FAILED
    log.error = error
    log.save(update_fields=["status", "error", "attempts", "updated_at"])


def _smtp_is_permanent(exc: Exception) -> bool:
    """5xx answers (mailbox unknown, relay refused) will not change on retry."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    code = getattr(exc, "smtp_code", None)
    return isinstance(code, int) and code >= 500


def email_deliver(*, job: Any, log_id: str | None = None) -> EmailLog:
    """Render and send one e-mail job; the job's side of notification:email.

    Bad data fails at once (PermanentJobError); SMTP errors and timeouts raise
    RetryableJobError until the queue's attempts are used up, then fail. The
    log's row is locked across the send, so two jobs for one log (a re-drive
    racing a late job, a redelivery) send it once.
    """
    job = job if isinstance(job, dict) else {}
    log = _log_for_job(job, log_id)
    with transaction.atomic():
        log = EmailLog.objects.select_for_update().get(pk=log.pk)
        error = _deliver_locked(log, job)
    if error is not None:
        raise error
    return log


def _context_at_send_time(template: str, data: dict, to: str) -> dict:
    """The template's variables: the job's data, less any secret it carried,
    plus the secrets this template is sent with, made now."""
    secret = SEND_TIME_SECRETS.get(template)
    if secret is None:
        return data
    user = password_reset_recipient(user_id=data.get("userId"), to=to)
    if user is None:
        raise EmailJobError(
            "data", "A password reset goes only to its active user's own address."
        )
    return {**data, secret: password_reset_token(user)}


def _deliver_locked(log: EmailLog, job: dict) -> Exception | None:
    """Send under the row lock; the error to raise once the log is saved."""
    if log.status == EmailLog.Status.SENT:
        return None  # redelivered after a crash that followed the send
    log.attempts += 1
    to, template, data = job.get("to"), job.get("template"), job.get("data")
    try:
        email_check(to=to, template=template, data=data)
        content = email_render(
            template=template,
            data=_context_at_send_time(template, data, to),
            subject=str(job.get("subject") or ""),
        )
    except EmailJobError as exc:
        _fail(log, str(exc))
        return PermanentJobError(str(exc))

    message = EmailMultiAlternatives(
        subject=content["subject"],
        body=content["text"],
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
    )
    message.attach_alternative(content["html"], "text/html")
    try:
        message.send(fail_silently=False)
    except (smtplib.SMTPException, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if _smtp_is_permanent(exc):
            _fail(log, error)
            return PermanentJobError(error)
        if not EMAIL.may_retry(log.attempts):
            _fail(log, f"gave up after {log.attempts} attempts: {error}")
            return PermanentJobError(error)
        log.error = error
        log.save(update_fields=["attempts", "error", "updated_at"])
        logger.warning("E-mail %s to %s: %s (will retry)", template, to, error)
        return RetryableJobError(error)

    log.status = EmailLog.Status.SENT
    log.subject = content["subject"]
    log.error = ""
    log.sent_at = timezone.now()
    log.save(
        update_fields=[
            "status",
            "subject",
            "error",
            "attempts",
            "sent_at",
            "updated_at",
        ]
    )
    return None
