"""Sending reminders: the job of booking:reminder. Each reminder is sent at
most once, under its booking's and its row's locks; the sent message is
recorded by messaging, in the same transaction.

A job sends in rounds, earliest due first. A round locks its rows, asks the
throughput governor for a token per send (one round trip) and sends the
granted ones at the same time (messaging/governed_sending.py), so a number's
rate is reached at Meta's answer time whatever the worker's concurrency. A
send without a token, or one Meta answers 130429/131056, stays queued without
spending an attempt and goes in a later round; past its ``send_by`` it fails
with the throughput reason.
"""

import logging
import time
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bookings.models import Booking, BookingReminder
from bookings.reminder_content import ReminderOutbound, reminder_outbound
from bookings.reminders import (
    reminder_job_size,
    reminder_jobs_publish,
    reminder_too_late_reason,
)
from bookings.signals import bookings_changed_on_commit
from messaging.governed_sending import (
    SendOutcome,
    governed_sends,
)
from messaging.outbound import (
    message_outbound_record,
    message_send_error_record,
    operator_test_send,
)
from messaging.services import wa_id_from_phone
from queues.definitions import REMINDER, RetryableJobError

logger = logging.getLogger(__name__)

#: A job starts no new round after this long and hands the rest to a new job,
#: so a slow Meta never drives it into the task time limit mid-send.
REMINDER_JOB_BUDGET_SECONDS = 30.0
#: A job waits in-process for a token this long at most; longer, it hands on.
REMINDER_TOKEN_WAIT_SECONDS = 2.0

THROUGHPUT_REASON = (
    "WhatsApp throughput: Meta's limit for this number left no slot before "
    "the reminder's send-by time"
)


def _reminder_skip_reason(
    reminder: BookingReminder, booking: Booking, now: datetime, *, deferred: bool
) -> tuple[str, str]:
    """(status, reason) that closes the row before a send, or ("", "")."""
    if not booking.is_active:
        return BookingReminder.Status.SKIPPED, f"booking {booking.status}"
    if reminder.booking_start_at != booking.start_at:
        return BookingReminder.Status.SKIPPED, "the booking was rescheduled"
    if now >= reminder.send_by:
        if deferred:
            return BookingReminder.Status.FAILED, THROUGHPUT_REASON
        return BookingReminder.Status.SKIPPED, reminder_too_late_reason(reminder.kind)
    return "", ""


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
    outbound: ReminderOutbound,
    wamid: str,
    now: datetime,
) -> None:
    """The sent reminder as an outbound Message (messaging records it), the
    booking's stamp (and the template and language used), the row marked
    sent: all in the transaction that holds the row."""
    message_outbound_record(
        salon=booking.salon,
        customer_wa_id=wa_id,
        customer_name=booking.customer_name,
        wamid=wamid,
        type=outbound.type,
        body=outbound.body,
        content={**outbound.content, "booking_reminder": reminder.kind},
        at=now,
    )
    metadata = dict(booking.metadata)
    metadata["reminders"] = {
        **(metadata.get("reminders") or {}),
        reminder.kind: now.isoformat(),
    }
    if outbound.template:
        metadata["reminder_templates"] = {
            **(metadata.get("reminder_templates") or {}),
            reminder.kind: outbound.template,
        }
    booking.metadata = metadata
    booking.save(update_fields=["metadata", "updated_at"])
    reminder.status = BookingReminder.Status.SENT
    reminder.sent_at = now
    reminder.wamid = wamid
    reminder.reason = ""
    reminder.save(
        update_fields=["status", "sent_at", "wamid", "reason", "attempts", "updated_at"]
    )


class _Round:
    """What one round came to."""

    def __init__(self) -> None:
        self.statuses: dict[int, str] = {}  # reminder id -> final status
        self.deferred: dict[int, float] = {}  # reminder id -> seconds to wait
        self.retried: dict[int, str] = {}  # reminder id -> retryable error


def _reminder_apply(
    round_: _Round,
    reminder: BookingReminder,
    booking: Booking,
    outbound: ReminderOutbound,
    outcome: SendOutcome,
    *,
    wa_id: str,
    now: datetime,
) -> None:
    if outcome.deferred:
        round_.deferred[reminder.pk] = outcome.retry_after
        return
    reminder.attempts += 1
    if outcome.result is not None:
        _reminder_record(
            reminder,
            booking,
            wa_id=wa_id,
            outbound=outbound,
            wamid=outcome.result.wamid,
            now=now,
        )
        round_.statuses[reminder.pk] = reminder.status
        return
    exc = outcome.error
    reminder.last_error = exc.as_dict()
    if exc.retryable and REMINDER.may_retry(reminder.attempts):
        reminder.save(update_fields=["attempts", "last_error", "updated_at"])
        round_.retried[reminder.pk] = f"WhatsApp: {exc}"
        return
    # A refusal a person must act on is shown on a failed message too.
    message_send_error_record(
        salon=booking.salon,
        customer_wa_id=wa_id,
        customer_name=booking.customer_name,
        type=outbound.type,
        body=outbound.body,
        content={**outbound.content, "booking_reminder": reminder.kind},
        error=exc.as_dict(),
        at=now,
    )
    _reminder_close(
        reminder,
        BookingReminder.Status.FAILED,
        f"WhatsApp refused the reminder: {exc}",
    )
    round_.statuses[reminder.pk] = reminder.status


@transaction.atomic
def _reminders_round(reminder_ids: list[int], deferred: set[int]) -> _Round:
    """One round under the bookings' and the rows' locks: close what cannot be
    sent, send the rest at once through the governor, record each outcome."""
    round_ = _Round()
    booking_ids = BookingReminder.objects.filter(pk__in=reminder_ids).values_list(
        "booking_id", flat=True
    )
    # Bookings first, then the rows, each in one order: the order
    # booking_cancel/booking_update use, and no deadlock between two jobs.
    bookings = {
        booking.pk: booking
        for booking in Booking.objects.select_for_update(of=("self",))
        .select_related("salon")
        .filter(pk__in=list(booking_ids))
        .order_by("pk")
    }
    rows = list(
        BookingReminder.objects.select_for_update()
        .filter(pk__in=reminder_ids, booking_id__in=list(bookings))
        .order_by("due_at", "pk")
    )
    now = timezone.now()
    to_send: list[tuple[BookingReminder, Booking, str, ReminderOutbound]] = []
    templates: dict = {}
    for reminder in rows:
        if reminder.status != BookingReminder.Status.QUEUED:
            round_.statuses[reminder.pk] = reminder.status
            continue  # sent, skipped, failed, or rescheduled meanwhile
        booking = bookings[reminder.booking_id]
        bookings_changed_on_commit(booking.salon_id)
        status, reason = _reminder_skip_reason(
            reminder, booking, now, deferred=reminder.pk in deferred
        )
        if status:
            _reminder_close(reminder, status, reason)
            round_.statuses[reminder.pk] = status
            continue
        wa_id = wa_id_from_phone(booking.customer_phone)
        outbound = reminder_outbound(
            booking, wa_id=wa_id, now=now, key=reminder.pk, templates=templates
        )
        if isinstance(outbound, str):
            _reminder_close(reminder, BookingReminder.Status.FAILED, outbound)
            round_.statuses[reminder.pk] = reminder.status
            continue
        to_send.append((reminder, booking, wa_id, outbound))
    outcomes = governed_sends([outbound.send for *_, outbound in to_send])
    # The window that remains: a crash from here to the commit loses the
    # record of messages Meta accepted (docs/REMINDERS.md).
    for (reminder, booking, wa_id, outbound), outcome in zip(
        to_send, outcomes, strict=True
    ):
        _reminder_apply(
            round_, reminder, booking, outbound, outcome, wa_id=wa_id, now=now
        )
    return round_


def reminder_deliver(*, reminder_id: int) -> BookingReminder | None:
    """Send one queued reminder at most once (a round of one).

    Re-checks the booking (active, start unchanged, still in time), sends over
    WhatsApp and records the Message, the booking's metadata stamp and the
    row's sent mark in the transaction that holds the row's lock. A second
    delivery of the job (retry, redelivery after a crash) waits for that lock
    and finds the row sent. Raises RetryableJobError, after committing the
    attempt, when Meta's error is worth a retry; a send the governor deferred
    stays queued (no attempt spent).
    """
    round_ = _reminders_round([reminder_id], set())
    if round_.retried:
        raise RetryableJobError(round_.retried[reminder_id])
    return BookingReminder.objects.filter(pk=reminder_id).first()


def _due_order(reminder_ids: list[int]) -> tuple[list[int], int]:
    """The job's ids by due time, and how many to send per round: a job as
    the dispatcher sizes it, for the fastest number among them (enough in
    flight for its rate, and a whole job in one round: a round of the last
    one or two would cost a transaction and Meta's answer time on its own)."""
    rows = list(
        BookingReminder.objects.filter(pk__in=reminder_ids)
        .order_by("due_at", "pk")
        .values_list("pk", "booking__salon__whatsapp_throughput_per_second")
    )
    rate = max(
        (rate or settings.WHATSAPP_THROUGHPUT_PER_SECOND for _, rate in rows),
        default=settings.WHATSAPP_THROUGHPUT_PER_SECOND,
    )
    return [pk for pk, _ in rows], reminder_job_size(rate)


def reminders_deliver(
    *, reminder_ids: list[int], deferred_ids: list[int] | None = None
) -> dict[str, int]:
    """A booking:reminder job: its reminders in rounds (see the module's
    docstring), each round in its own transaction. Deferred sends wait for
    their token in-process for up to REMINDER_TOKEN_WAIT_SECONDS, else are
    handed on to a new job due when the token is. When some hit a retryable
    error, the rest are still done and then RetryableJobError retries the
    job; on the retry the rows already sent, skipped or failed are no-ops."""
    outcome: dict[str, int] = {}
    retry_errors: list[str] = []
    deferred: set[int] = set(deferred_ids or ())
    ready_at: dict[int, float] = {}
    pending, per_round = _due_order(reminder_ids)
    started = time.monotonic()
    rounds = 0
    while pending:
        now = time.monotonic()
        wait = max(0.0, min(ready_at.get(pk, now) for pk in pending) - now)
        over_budget = rounds and now + wait - started > REMINDER_JOB_BUDGET_SECONDS
        if over_budget or wait > REMINDER_TOKEN_WAIT_SECONDS:
            reminder_jobs_publish(
                pending,
                deferred_ids=sorted(deferred & set(pending)),
                countdown=wait,
                size=len(pending),
            )
            outcome["handed_on"] = len(pending)
            break
        if wait:
            time.sleep(wait)
            now = time.monotonic()
        batch = [pk for pk in pending if ready_at.get(pk, now) <= now][:per_round]
        round_ = _reminders_round(batch, deferred)
        rounds += 1
        retry_errors += [f"{pk}: {error}" for pk, error in round_.retried.items()]
        for status in round_.statuses.values():
            outcome[status] = outcome.get(status, 0) + 1
        for pk, seconds in round_.deferred.items():
            deferred.add(pk)
            ready_at[pk] = time.monotonic() + seconds
        done = set(batch) - set(round_.deferred)
        gone = done - set(round_.statuses) - set(round_.retried)
        if gone:  # the booking was deleted
            outcome["deleted"] = outcome.get("deleted", 0) + len(gone)
        pending = [pk for pk in pending if pk not in done]
    if deferred:
        outcome["deferred"] = len(deferred)
    if retry_errors:
        raise RetryableJobError(
            f"{len(retry_errors)} of {len(reminder_ids)} reminders will be retried: "
            + "; ".join(retry_errors[:5])
        )
    return outcome


REMINDER_TEST_SEND_TASK = "bookings.reminder_test_send"


def reminder_test_send(*, salon_id: str, to: str, parameters: list[str]) -> str:
    """The operators' test job on booking:reminder: the reminder template
    (WHATSAPP_REMINDER_TEMPLATE, in the salon's language) to ``to``."""
    return operator_test_send(
        salon_id=salon_id,
        to=to,
        what="reminder",
        send=lambda client, salon, wa_id: client.send_template(
            phone_number_id=salon.whatsapp_phone_number_id,
            to=wa_id,
            name=settings.WHATSAPP_REMINDER_TEMPLATE,
            language=salon.language,
            parameters=parameters,
        ),
    )
