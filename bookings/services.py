"""Writes for salons, bookings and their reminders. Every rule lives here.

Reminders are rows (BookingReminder), never broker ETAs: beat runs
``reminder_dispatch`` every minute, which claims the due rows and queues one
``booking:reminder`` job each; the job calls ``reminder_deliver``.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import phonenumbers
from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.timezone import now as timezone_now

from bookings.cache import BookingState, dashboard_track
from bookings.models import PHONE_NUMBER_ID_TAKEN, Booking, BookingReminder, Salon
from bookings.signals import bookings_changed
from messaging.models import Conversation, Message, MessageTemplate
from messaging.services import wa_id_from_phone
from messaging.signals import messages_changed
from messaging.whatsapp import SendResult, WhatsAppError, whatsapp_client
from notifications.services import email_enqueue
from queues.definitions import REMINDER, Priority, RetryableJobError, celery_priority
from saas.services import model_save_validated
from saas.tenancy import salons_for

logger = logging.getLogger(__name__)

SALON_EDITABLE_FIELDS = (
    "name",
    "whatsapp_phone_number_id",
    "timezone",
    "language",
    "email",
)
BOOKING_EDITABLE_FIELDS = (
    "customer_name",
    "customer_phone",
    "customer_email",
    "service_name",
    "start_at",
    "status",
)

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
#: A job starts no new send after this long and hands the rest to a new job,
#: so a slow Meta never drives it into the task time limit mid-send.
REMINDER_JOB_BUDGET_SECONDS = 30.0
#: A row queued this long ago whose job never finished (lost publish, a broker
#: flushed) is queued again; the job's row lock makes a duplicate job harmless.
REMINDER_REQUEUE_AFTER = timedelta(minutes=15)
#: Meta accepts free text only this long after the customer's last message.
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)


def phone_normalize(raw: str) -> str:
    """Return the E.164 form of ``raw`` or raise ValidationError."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        parsed = None
    if (
        parsed is None
        or not raw.startswith("+")
        or not phonenumbers.is_possible_number(parsed)
    ):
        raise ValidationError(
            {"customer_phone": "Enter a phone number in E.164 form, e.g. +15551234567."}
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _after_commit_bookings_changed(salon_id) -> None:
    transaction.on_commit(lambda: bookings_changed.send(sender=None, salon_id=salon_id))


# --- Salons -----------------------------------------------------------------


@transaction.atomic
def salon_create(
    *,
    owner,
    name: str,
    whatsapp_phone_number_id: str,
    timezone: str = "UTC",
    language: str = "en_US",
    email: str = "",
) -> Salon:
    """Create a salon and welcome its owner by e-mail."""
    salon = Salon(
        owner=owner,
        name=name,
        whatsapp_phone_number_id=whatsapp_phone_number_id,
        whatsapp_claimed_by=owner,
        whatsapp_claimed_at=timezone_now(),
        timezone=timezone,
        language=language,
        email=email,
    )
    model_save_validated(salon, integrity_errors=_DUPLICATE_PHONE_ID)
    recipient = owner.email or salon.email
    if recipient:
        email_enqueue(
            to=recipient,
            template="salon_welcome",
            data={
                "ownerName": owner.get_full_name() or owner.get_username(),
                "salonName": salon.name,
                "phoneNumberId": salon.whatsapp_phone_number_id,
            },
        )
    return salon


@transaction.atomic
def salon_update(*, salon: Salon, data: dict[str, Any], actor=None) -> Salon:
    """Change a salon's editable fields. Its WhatsApp number, once customers
    have written to it, moves only by staff: a tenant re-pointing a salon with
    conversations would receive another business's customers."""
    new_id = data.get("whatsapp_phone_number_id", salon.whatsapp_phone_number_id)
    if new_id != salon.whatsapp_phone_number_id:
        if salon.conversations.exists() and not getattr(actor, "is_staff", False):
            raise ValidationError(
                {
                    "whatsapp_phone_number_id": "This salon has conversations on its "
                    "WhatsApp number; ask support to move it to another number."
                }
            )
        salon.whatsapp_claimed_by = actor if getattr(actor, "pk", None) else None
        salon.whatsapp_claimed_at = timezone_now()
    for field_name in SALON_EDITABLE_FIELDS:
        if field_name in data:
            setattr(salon, field_name, data[field_name])
    model_save_validated(salon, integrity_errors=_DUPLICATE_PHONE_ID)
    return salon


_DUPLICATE_PHONE_ID = {"whatsapp_phone_number_id": PHONE_NUMBER_ID_TAKEN}


# --- Bookings ---------------------------------------------------------------


def booking_local_start(booking: Booking) -> str:
    """The start in the salon's time zone, as customers read it."""
    local = timezone.localtime(booking.start_at, booking.salon.tz)
    return f"{local:%A} {local.day} {local:%B %Y}, {local:%H:%M}"


def booking_email_data(booking: Booking) -> dict[str, str]:
    """Variables of the booking e-mails, in the seed's names."""
    return {
        "customerName": booking.customer_name,
        "serviceName": booking.service_name,
        "serviceDate": booking_local_start(booking),
        "salonName": booking.salon.name,
        "bookingId": str(booking.pk),
    }


def _booking_mail(booking: Booking, template: str) -> None:
    if booking.customer_email:
        email_enqueue(
            to=booking.customer_email,
            template=template,
            data=booking_email_data(booking),
        )


def _booking_save(booking: Booking, *, before: BookingState | None, **kwargs) -> None:
    """Save a change from ``before`` (None: new); after commit the cached
    dashboards are patched with it rather than invalidated (bookings/cache.py)."""
    dashboard_track(booking, before=before)
    try:
        booking.save(**kwargs)
    finally:
        booking.__dict__.pop("_dashboard_before", None)


def booking_check(booking: Booking, *, start_changed: bool) -> None:
    """The booking rules beyond field types; normalises the phone in place."""
    booking.customer_phone = phone_normalize(booking.customer_phone)
    if not booking.service_name.strip():
        raise ValidationError({"service_name": "Name the service."})
    if start_changed and booking.start_at <= timezone.now():
        raise ValidationError({"start_at": "The start must be in the future."})


@transaction.atomic
def booking_create(
    *,
    salon: Salon,
    customer_name: str,
    customer_phone: str,
    service_name: str,
    start_at: datetime,
    customer_email: str = "",
    status: str = Booking.Status.PENDING,
    actor=None,
) -> Booking:
    """Create a booking, its reminder rows and (with an e-mail) its confirmation.

    With ``actor``, the salon must be one the actor may see.
    """
    if actor is not None and not salons_for(actor).filter(pk=salon.pk).exists():
        raise ValidationError({"salon": "Unknown salon."})
    booking = Booking(
        salon=salon,
        customer_name=customer_name,
        customer_phone=customer_phone,
        customer_email=customer_email,
        service_name=service_name,
        start_at=start_at,
        status=status,
    )
    booking_check(booking, start_changed=True)
    booking.full_clean()
    _booking_save(booking, before=None)
    reminders_sync(booking=booking)
    if booking.is_active:
        _booking_mail(booking, "booking_confirmation")
    return booking


@transaction.atomic
def booking_update(*, booking: Booking, data: dict[str, Any]) -> Booking:
    """Apply ``data``; cancelling mails and stops reminders, a new start
    reschedules them, completing stops them."""
    if data.get("status") == Booking.Status.CANCELLED:
        booking = booking_cancel(booking=booking)
        data = {k: v for k, v in data.items() if k != "status"}
    # Locked so a reminder job (which locks it too) sees all or nothing.
    booking = Booking.objects.select_for_update(of=("self",)).get(pk=booking.pk)
    before = BookingState.of(booking)
    old_start, was_active = booking.start_at, booking.is_active
    for field_name in BOOKING_EDITABLE_FIELDS:
        if field_name in data:
            setattr(booking, field_name, data[field_name])
    start_changed = booking.start_at != old_start
    booking_check(booking, start_changed=start_changed)
    booking.full_clean()
    # metadata is the reminders' to write; never save a stale copy over it.
    _booking_save(
        booking, before=before, update_fields=[*BOOKING_EDITABLE_FIELDS, "updated_at"]
    )
    if not booking.is_active:
        reminders_close(booking=booking, reason=f"booking {booking.status}")
    elif start_changed or not was_active:
        reminders_sync(booking=booking, keep_sent=not start_changed)
    return booking


@transaction.atomic
def booking_cancel(*, booking: Booking) -> Booking:
    """Cancel, stop the reminders not yet sent, tell the customer by e-mail."""
    booking = Booking.objects.select_for_update(of=("self",)).get(pk=booking.pk)
    if booking.status == Booking.Status.CANCELLED:
        return booking
    if booking.status == Booking.Status.COMPLETED:
        raise ValidationError({"status": "A completed booking cannot be cancelled."})
    before = BookingState.of(booking)
    booking.status = Booking.Status.CANCELLED
    _booking_save(booking, before=before, update_fields=["status", "updated_at"])
    reminders_close(booking=booking, reason="booking cancelled")
    _booking_mail(booking, "booking_cancelled")
    return booking


@transaction.atomic
def booking_delete(*, booking: Booking) -> None:
    booking.delete()


# --- Reminders: scheduling ---------------------------------------------------


def reminder_window(kind: str, start_at: datetime) -> tuple[datetime, datetime]:
    """(due_at, send_by) of a reminder of this kind for a booking at start_at."""
    lead = REMINDER_LEADS[kind]
    return start_at - lead, start_at - lead / 2


def _too_late_reason(kind: str) -> str:
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
            status, reason = BookingReminder.Status.SKIPPED, _too_late_reason(kind)
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
        _after_commit_bookings_changed(booking.salon_id)
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
    _after_commit_bookings_changed(booking.salon_id)
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


def _publish_reminder_jobs(reminder_ids: list[int]) -> None:
    from bookings.tasks import reminder_send

    with current_app.producer_or_acquire() as producer:
        for start in range(0, len(reminder_ids), REMINDER_JOB_SIZE):
            reminder_send.apply_async(
                kwargs={
                    "reminder_ids": reminder_ids[start : start + REMINDER_JOB_SIZE]
                },
                priority=celery_priority(Priority.REMINDER),
                producer=producer,
            )


@transaction.atomic
def _reminder_claim_batch(*, now: datetime, limit: int) -> tuple[int, int]:
    rows = list(
        BookingReminder.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(status=BookingReminder.Status.PENDING, due_at__lte=now)
        .order_by("due_at")
        .values_list("id", "kind", "send_by", "booking__salon_id")[:limit]
    )
    sendable = [row for row in rows if row[2] > now]
    late = [row for row in rows if row[2] <= now]
    if sendable:
        BookingReminder.objects.filter(pk__in=[row[0] for row in sendable]).update(
            status=BookingReminder.Status.QUEUED, queued_at=now, updated_at=now
        )
        ids = [row[0] for row in sendable]
        transaction.on_commit(lambda: _publish_reminder_jobs(ids))
    for kind in {row[1] for row in late}:
        BookingReminder.objects.filter(
            pk__in=[row[0] for row in late if row[1] == kind]
        ).update(
            status=BookingReminder.Status.SKIPPED,
            reason=_too_late_reason(kind),
            updated_at=now,
        )
    for salon_id in {row[3] for row in rows}:
        _after_commit_bookings_changed(salon_id)
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
        transaction.on_commit(lambda: _publish_reminder_jobs(stale))
        logger.warning("Requeued %d reminders whose jobs never finished", len(stale))
    return len(stale)


# --- Reminders: sending -------------------------------------------------------


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
    template = MessageTemplate.objects.filter(
        salon=salon,
        name=name,
        language=language,
        status=MessageTemplate.Status.APPROVED,
    ).first()
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
    last_inbound = (
        Conversation.objects.filter(salon=salon, customer_wa_id=wa_id)
        .values_list("last_inbound_at", flat=True)
        .first()
    )
    if last_inbound and now - last_inbound < CUSTOMER_SERVICE_WINDOW:
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
        return _too_late_reason(reminder.kind)
    return ""


def _reminder_close(reminder: BookingReminder, status: str, reason: str) -> None:
    reminder.status = status
    reminder.reason = reason[:255]
    reminder.save(
        update_fields=["status", "reason", "attempts", "last_error", "updated_at"]
    )


def _conversation_touch(booking: Booking, *, wa_id: str, now: datetime) -> Conversation:
    """The customer's conversation with its last_message_at moved to ``now``;
    a new one (named after the booking) on first contact."""
    touched = Conversation.objects.filter(salon=booking.salon, customer_wa_id=wa_id)
    if touched.update(last_message_at=now):
        return touched.get()
    new = Conversation(
        salon=booking.salon,
        customer_wa_id=wa_id,
        customer_name=booking.customer_name,
        last_message_at=now,
    )
    Conversation.objects.bulk_create([new], ignore_conflicts=True)
    # Lost a race with an inbound message's insert: take the row it made.
    conversation = touched.get()
    if conversation.pk != new.pk:
        touched.update(last_message_at=now)
    return conversation


def _reminder_record(
    reminder: BookingReminder,
    booking: Booking,
    *,
    wa_id: str,
    outbound: _Outbound,
    result: SendResult,
    now: datetime,
) -> Message:
    """The sent reminder as an outbound Message, the booking's stamp, the row
    marked sent: all in the transaction that holds the row."""
    conversation = _conversation_touch(booking, wa_id=wa_id, now=now)
    message = Message.objects.create(
        salon=booking.salon,
        conversation=conversation,
        wamid=result.wamid,
        direction=Message.Direction.OUTBOUND,
        type=outbound.type,
        body=outbound.body,
        content={**outbound.content, "booking_reminder": reminder.kind},
        status=Message.Status.SENT,
        sent_at=now,
        created_at=now,
    )
    transaction.on_commit(
        lambda: messages_changed.send(
            sender=None, salon_id=booking.salon_id, conversation_ids=[conversation.pk]
        )
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
    return message


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
    _after_commit_bookings_changed(booking.salon_id)
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
        if exc.retryable and reminder.attempts < REMINDER.attempts:
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
            _publish_reminder_jobs(rest)
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
