"""Reminders: rows (BookingReminder), never broker ETAs. Scheduling writes
the rows from a booking's start and status; beat runs ``reminder_dispatch``
every minute, which claims the due rows and queues ``booking:reminder`` jobs;
a job sends them (bookings/reminder_sending.py).
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from bookings.models import Booking, BookingReminder
from bookings.signals import bookings_changed_on_commit
from messaging.governed_sending import sends_in_flight
from queues.definitions import REMINDER
from queues.publish import jobs_publish

logger = logging.getLogger(__name__)

#: The job of booking:reminder (bookings/tasks.py), published by name.
REMINDER_SEND_TASK = "bookings.reminder_send"

#: How long before the start each reminder is due. It is still sent while the
#: booking is at least half this lead away (late bookings, downtime).
REMINDER_LEADS: dict[str, timedelta] = {
    BookingReminder.Kind.DAY_BEFORE: timedelta(hours=24),
    BookingReminder.Kind.HOUR_BEFORE: timedelta(hours=1),
}
#: Rows the dispatcher claims per transaction.
REMINDER_DISPATCH_BATCH = 500
#: Reminders per booking:reminder job: each is still sent in a transaction of
#: its own; the job only spares Celery's per-message cost (bench/reminders.py).
REMINDER_JOB_SIZE = 25
#: A row queued this long ago whose job never finished (lost publish, a broker
#: flushed or failed over) is queued again; the job's row lock makes a
#: duplicate job harmless. REMINDER_REQUEUE_AFTER_SECONDS, 15 minutes.
REMINDER_REQUEUE_AFTER = timedelta(seconds=settings.REMINDER_REQUEUE_AFTER_SECONDS)


def reminder_window(kind: str, start_at: datetime) -> tuple[datetime, datetime]:
    """(due_at, send_by) of a reminder of this kind for a booking at start_at."""
    lead = REMINDER_LEADS[kind]
    return start_at - lead, start_at - lead / 2


def reminder_too_late_reason(kind: str) -> str:
    half = REMINDER_LEADS[kind] / 2
    hours, minutes = divmod(int(half.total_seconds()) // 60, 60)
    span = f"{hours} h" if not minutes else f"{hours * 60 + minutes} min"
    return f"too late: less than {span} before the start"


_RESET_FIELDS = [
    "due_at",
    "send_by",
    "booking_start_at",
    "status",
    "reason",
    "attempts",
    "last_error",
    "queued_at",
    "sent_at",
    "wamid",
    "updated_at",
]


@transaction.atomic
def reminders_sync(
    *, booking: Booking, keep_sent: bool = False, now: datetime | None = None
) -> list[BookingReminder]:
    """(Re)write the booking's reminder rows from its start and status.

    Idempotent; a reminder whose due time has passed is pending while still
    worth sending, skipped with its reason otherwise. With ``keep_sent``,
    reminders already sent stay as they are.
    """
    now = now or timezone.now()
    sent = set(
        booking.reminders.filter(status=BookingReminder.Status.SENT).values_list(
            "kind", flat=True
        )
    )
    kept = sent if keep_sent else set()
    rows = []
    for kind in BookingReminder.Kind.values:
        if kind in kept:
            continue
        due_at, send_by = reminder_window(kind, booking.start_at)
        status, reason = BookingReminder.Status.PENDING, ""
        if not booking.is_active:
            status, reason = BookingReminder.Status.SKIPPED, f"booking {booking.status}"
        elif now >= send_by:
            status, reason = (
                BookingReminder.Status.SKIPPED,
                reminder_too_late_reason(kind),
            )
        rows.append(
            BookingReminder(
                booking=booking,
                kind=kind,
                due_at=due_at,
                send_by=send_by,
                booking_start_at=booking.start_at,
                status=status,
                reason=reason,
            )
        )
    BookingReminder.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["booking", "kind"],
        update_fields=_RESET_FIELDS,
    )
    if sent - kept:
        # Of the reminders, the dashboard counts only the sent ones.
        bookings_changed_on_commit(booking.salon_id)
    return list(booking.reminders.order_by("due_at"))


@transaction.atomic
def reminders_close(*, booking: Booking, reason: str) -> int:
    """Skip the booking's reminders that are not sent yet (a queued job that
    runs later finds its row skipped and sends nothing). No dashboard figure
    counts unsent reminders, so nothing is announced."""
    return booking.reminders.filter(
        status__in=[BookingReminder.Status.PENDING, BookingReminder.Status.QUEUED]
    ).update(
        status=BookingReminder.Status.SKIPPED,
        reason=reason[:255],
        updated_at=timezone.now(),
    )


@transaction.atomic
def reminder_schedule(
    *, booking_id: UUID | str, kind: str, due_at: datetime
) -> BookingReminder:
    """Schedule one reminder of a booking at ``due_at`` (the seed's
    scheduleBookingReminder): a pending row the dispatcher sends when due."""
    if kind not in BookingReminder.Kind.values:
        raise ValidationError(
            {"reminderType": f"Expected one of {', '.join(BookingReminder.Kind)}."}
        )
    if timezone.is_naive(due_at):
        raise ValidationError({"sendAt": "Give the time with its UTC offset."})
    try:
        booking = (
            Booking.objects.select_for_update(of=("self",))
            .filter(pk=booking_id)
            .select_related("salon")
            .first()
        )
    except ValidationError:  # not a UUID
        booking = None
    if booking is None:
        raise ValidationError({"bookingId": "Unknown booking."})
    if not booking.is_active:
        raise ValidationError({"bookingId": f"The booking is {booking.status}."})
    if due_at >= booking.start_at:
        raise ValidationError({"sendAt": "The reminder must be due before the start."})
    _, send_by = reminder_window(kind, booking.start_at)
    reminder, _ = BookingReminder.objects.update_or_create(
        booking=booking,
        kind=kind,
        defaults={
            "due_at": due_at,
            "send_by": max(send_by, due_at + (booking.start_at - due_at) / 2),
            "booking_start_at": booking.start_at,
            "status": BookingReminder.Status.PENDING,
            "reason": "",
            "attempts": 0,
            "last_error": None,
            "queued_at": None,
            "sent_at": None,
            "wamid": "",
        },
    )
    bookings_changed_on_commit(booking.salon_id)
    return reminder


# --- Reminders: dispatching ---------------------------------------------------


@dataclass
class DispatchReport:
    queued: int = 0
    skipped: int = 0
    requeued: int = 0
    #: (rows claimed, seconds) of each claiming transaction
    batches: list[tuple[int, float]] = field(default_factory=list)


def reminder_dispatch(
    *, now: datetime | None = None, batch_size: int = REMINDER_DISPATCH_BATCH
) -> DispatchReport:
    """Claim every due pending reminder and queue it on booking:reminder.

    Each batch is claimed with SELECT ... FOR UPDATE SKIP LOCKED and marked
    queued in one transaction, so two dispatchers at once never claim one row
    twice; the jobs are published after that transaction commits.
    """
    now = now or timezone.now()
    report = DispatchReport()
    while True:
        started = time.perf_counter()
        queued, skipped = _reminder_claim_batch(now=now, limit=batch_size)
        claimed = queued + skipped
        if claimed:
            report.batches.append((claimed, time.perf_counter() - started))
        report.queued += queued
        report.skipped += skipped
        if claimed < batch_size:
            break
    report.requeued = _reminder_requeue_stale(now=now)
    if report.queued or report.skipped or report.requeued:
        logger.info(
            "Reminders dispatched: %d queued, %d skipped, %d requeued in %d batches",
            report.queued,
            report.skipped,
            report.requeued,
            len(report.batches),
        )
    return report


def reminder_job_size(rate: int | None = None) -> int:
    """Reminders per job: REMINDER_JOB_SIZE, or more for a number fast enough
    to need more sends in flight (messaging/governed_sending.py)."""
    rate = rate or settings.WHATSAPP_THROUGHPUT_PER_SECOND
    return max(REMINDER_JOB_SIZE, sends_in_flight(rate))


def reminder_jobs_publish(
    reminder_ids: list[int],
    *,
    deferred_ids: list[int] | None = None,
    countdown: float | None = None,
    size: int | None = None,
) -> None:
    """booking:reminder jobs of up to ``size`` (default REMINDER_JOB_SIZE)
    reminders each, in the order given (earliest due first). ``deferred_ids``
    were deferred for throughput (past their send_by they fail with that
    reason); ``countdown`` delays the jobs until their tokens are there."""
    size = size or REMINDER_JOB_SIZE
    deferred = set(deferred_ids or ())
    kwargs_list = []
    for start in range(0, len(reminder_ids), size):
        ids = reminder_ids[start : start + size]
        kwargs: dict = {"reminder_ids": ids}
        if deferred & set(ids):
            kwargs["deferred_ids"] = [pk for pk in ids if pk in deferred]
        kwargs_list.append(kwargs)
    jobs_publish(
        REMINDER_SEND_TASK,
        queue=REMINDER,
        kwargs_list=kwargs_list,
        countdown=countdown,
    )


@transaction.atomic
def _reminder_claim_batch(*, now: datetime, limit: int) -> tuple[int, int]:
    rows = list(
        BookingReminder.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(status=BookingReminder.Status.PENDING, due_at__lte=now)
        .order_by("due_at")
        .values_list(
            "id",
            "kind",
            "send_by",
            "booking__salon_id",
            "booking__salon__whatsapp_throughput_per_second",
        )[:limit]
    )
    sendable = [row for row in rows if row[2] > now]
    late = [row for row in rows if row[2] <= now]
    if sendable:
        BookingReminder.objects.filter(pk__in=[row[0] for row in sendable]).update(
            status=BookingReminder.Status.QUEUED, queued_at=now, updated_at=now
        )
        ids = [row[0] for row in sendable]
        size = reminder_job_size(max(row[4] or 0 for row in sendable))
        transaction.on_commit(lambda: reminder_jobs_publish(ids, size=size))
    for kind in {row[1] for row in late}:
        BookingReminder.objects.filter(
            pk__in=[row[0] for row in late if row[1] == kind]
        ).update(
            status=BookingReminder.Status.SKIPPED,
            reason=reminder_too_late_reason(kind),
            updated_at=now,
        )
    for salon_id in {row[3] for row in rows}:
        bookings_changed_on_commit(salon_id)
    return len(sendable), len(late)


@transaction.atomic
def _reminder_requeue_stale(*, now: datetime) -> int:
    stale = list(
        BookingReminder.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(
            status=BookingReminder.Status.QUEUED,
            queued_at__lt=now - REMINDER_REQUEUE_AFTER,
            send_by__gt=now,
        )
        .values_list("id", flat=True)[:REMINDER_DISPATCH_BATCH]
    )
    if stale:
        BookingReminder.objects.filter(pk__in=stale).update(
            queued_at=now, updated_at=now
        )
        transaction.on_commit(lambda: reminder_jobs_publish(stale))
        logger.warning("Requeued %d reminders whose jobs never finished", len(stale))
    return len(stale)
