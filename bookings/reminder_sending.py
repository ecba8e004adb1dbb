"""Sending reminders: the job of booking:reminder. Each reminder is sent at
most once, under its booking's and its row's locks; the sent message is
recorded by messaging, in the same transaction."""

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bookings.models import Booking, BookingReminder, Salon
from bookings.reminders import reminder_jobs_publish, reminder_too_late_reason
from bookings.services import booking_local_start
from bookings.signals import bookings_changed_on_commit
from messaging.outbound import message_outbound_record
from messaging.selectors import customer_service_window_open, template_approved
from messaging.services import wa_id_from_phone
from messaging.whatsapp import SendResult, WhatsAppError, whatsapp_client
from queues.definitions import REMINDER, RetryableJobError

logger = logging.getLogger(__name__)

#: A job starts no new send after this long and hands the rest to a new job,
#: so a slow Meta never drives it into the task time limit mid-send.
REMINDER_JOB_BUDGET_SECONDS = 30.0


def _template_fill(body: str, parameters: list[str]) -> str:
    for number, value in enumerate(parameters, start=1):
        body = body.replace(f"{{{{{number}}}}}", value)
    return body


@dataclass
class _Outbound:
    type: str
    body: str
    content: dict[str, Any]
    send: Any  # () -> SendResult


def _reminder_outbound(
    booking: Booking, *, wa_id: str, now: datetime
) -> _Outbound | str:
    """What to send: the approved template, else free text inside the
    customer-service window; a reason string when neither is possible."""
    salon = booking.salon
    client = whatsapp_client()
    parameters = [
        booking.customer_name,
        booking.service_name,
        booking_local_start(booking),
    ]
    name, language = settings.WHATSAPP_REMINDER_TEMPLATE, salon.language
    template = template_approved(salon=salon, name=name, language=language)
    if template is not None:
        return _Outbound(
            type="template",
            body=_template_fill(template.body, parameters),
            content={
                "template": {
                    "name": name,
                    "language": language,
                    "parameters": parameters,
                }
            },
            send=lambda: client.send_template(
                phone_number_id=salon.whatsapp_phone_number_id,
                to=wa_id,
                name=name,
                language=language,
                parameters=parameters,
            ),
        )
    if customer_service_window_open(salon_id=salon.pk, wa_id=wa_id, now=now):
        text = (
            f"Hi {parameters[0]}, a reminder of your {parameters[1]} at "
            f"{salon.name} on {parameters[2]}."
        )
        return _Outbound(
            type="text",
            body=text,
            content={},
            send=lambda: client.send_text(
                phone_number_id=salon.whatsapp_phone_number_id, to=wa_id, body=text
            ),
        )
    return (
        f"no approved WhatsApp template {name!r} ({language}) and the customer has "
        "not written in the last 24 hours (Meta refuses free text then)"
    )


def _reminder_skip_reason(
    reminder: BookingReminder, booking: Booking, now: datetime
) -> str:
    if not booking.is_active:
        return f"booking {booking.status}"
    if reminder.booking_start_at != booking.start_at:
        return "the booking was rescheduled"
    if now >= reminder.send_by:
        return reminder_too_late_reason(reminder.kind)
    return ""


def _reminder_close(reminder: BookingReminder, status: str, reason: str) -> None:
    reminder.status = status
    reminder.reason = reason[:255]
    reminder.save(
        update_fields=["status", "reason", "attempts", "last_error", "updated_at"]
    )


def _reminder_record(
    reminder: BookingReminder,
    booking: Booking,
    *,
    wa_id: str,
    outbound: _Outbound,
    result: SendResult,
    now: datetime,
) -> None:
    """The sent reminder as an outbound Message (messaging records it), the
    booking's stamp, the row marked sent: all in the transaction that holds
    the row."""
    message_outbound_record(
        salon=booking.salon,
        customer_wa_id=wa_id,
        customer_name=booking.customer_name,
        wamid=result.wamid,
        type=outbound.type,
        body=outbound.body,
        content={**outbound.content, "booking_reminder": reminder.kind},
        at=now,
    )
    reminders_sent = dict(booking.metadata.get("reminders") or {})
    reminders_sent[reminder.kind] = now.isoformat()
    booking.metadata = {**booking.metadata, "reminders": reminders_sent}
    booking.save(update_fields=["metadata", "updated_at"])
    reminder.status = BookingReminder.Status.SENT
    reminder.sent_at = now
    reminder.wamid = result.wamid
    reminder.reason = ""
    reminder.save(
        update_fields=["status", "sent_at", "wamid", "reason", "attempts", "updated_at"]
    )


@transaction.atomic
def _reminder_attempt(reminder_id: int) -> tuple[BookingReminder | None, str]:
    """One try under the booking's and the row's locks: (row, retryable error)."""
    # Booking first, then the row: the order booking_cancel/booking_update use.
    booking = (
        Booking.objects.select_for_update(of=("self",))
        .select_related("salon")
        .filter(reminders__pk=reminder_id)
        .first()
    )
    if booking is None:
        return None, ""  # the booking was deleted
    reminder = BookingReminder.objects.select_for_update().get(pk=reminder_id)
    if reminder.status != BookingReminder.Status.QUEUED:
        return reminder, ""  # sent, skipped, failed, or rescheduled meanwhile
    now = timezone.now()
    bookings_changed_on_commit(booking.salon_id)
    skip_reason = _reminder_skip_reason(reminder, booking, now)
    if skip_reason:
        _reminder_close(reminder, BookingReminder.Status.SKIPPED, skip_reason)
        return reminder, ""
    wa_id = wa_id_from_phone(booking.customer_phone)
    outbound = _reminder_outbound(booking, wa_id=wa_id, now=now)
    if isinstance(outbound, str):
        _reminder_close(reminder, BookingReminder.Status.FAILED, outbound)
        return reminder, ""
    reminder.attempts += 1
    try:
        result = outbound.send()
    except WhatsAppError as exc:
        reminder.last_error = exc.as_dict()
        if exc.retryable and REMINDER.may_retry(reminder.attempts):
            reminder.save(update_fields=["attempts", "last_error", "updated_at"])
            return reminder, f"WhatsApp: {exc}"
        _reminder_close(
            reminder,
            BookingReminder.Status.FAILED,
            f"WhatsApp refused the reminder: {exc}",
        )
        return reminder, ""
    # The window that remains: a crash from here to the commit loses the
    # record of a message Meta accepted (docs/REMINDERS.md).
    _reminder_record(
        reminder, booking, wa_id=wa_id, outbound=outbound, result=result, now=now
    )
    return reminder, ""


def reminder_deliver(*, reminder_id: int) -> BookingReminder | None:
    """Send one queued reminder at most once; the job of booking:reminder.

    Re-checks the booking (active, start unchanged, still in time), sends over
    WhatsApp and records the Message, the booking's metadata stamp and the
    row's sent mark in the transaction that holds the row's lock. A second
    delivery of the job (retry, redelivery after a crash) waits for that lock
    and finds the row sent. Raises RetryableJobError, after committing the
    attempt, when Meta's error is worth a retry.
    """
    reminder, retryable_error = _reminder_attempt(reminder_id)
    if retryable_error:
        raise RetryableJobError(retryable_error)
    return reminder


def reminders_deliver(*, reminder_ids: list[int]) -> dict[str, int]:
    """A booking:reminder job: each reminder as in ``reminder_deliver``, each in
    its own transaction. When some hit a retryable error, the rest are still
    done and then RetryableJobError retries the job; on the retry the rows
    already sent, skipped or failed are no-ops."""
    outcome: dict[str, int] = {}
    retry_errors = []
    started = time.monotonic()
    for position, reminder_id in enumerate(reminder_ids):
        if position and time.monotonic() - started > REMINDER_JOB_BUDGET_SECONDS:
            rest = list(reminder_ids[position:])
            reminder_jobs_publish(rest)
            outcome["handed_on"] = len(rest)
            break
        try:
            reminder = reminder_deliver(reminder_id=reminder_id)
        except RetryableJobError as exc:
            retry_errors.append(f"{reminder_id}: {exc}")
            continue
        status = reminder.status if reminder else "deleted"
        outcome[status] = outcome.get(status, 0) + 1
    if retry_errors:
        raise RetryableJobError(
            f"{len(retry_errors)} of {len(reminder_ids)} reminders will be retried: "
            + "; ".join(retry_errors[:5])
        )
    return outcome


REMINDER_TEST_SEND_TASK = "bookings.reminder_test_send"


def reminder_test_send(*, salon_id: str, to: str, parameters: list[str]) -> str:
    """The operators' test job on booking:reminder (POST /admin/queue/test): the
    reminder template (WHATSAPP_REMINDER_TEMPLATE, in the salon's language)
    sent to ``to`` from the salon's number. Nothing is recorded. Returns the
    wamid."""
    salon = Salon.objects.get(pk=salon_id)
    try:
        result = whatsapp_client().send_template(
            phone_number_id=salon.whatsapp_phone_number_id,
            to=wa_id_from_phone(to),
            name=settings.WHATSAPP_REMINDER_TEMPLATE,
            language=salon.language,
            parameters=parameters,
        )
    except WhatsAppError as exc:
        if exc.retryable:
            raise RetryableJobError(str(exc)) from exc
        raise
    logger.info("Test reminder %s sent to %s", result.wamid, to)
    return result.wamid
