"""A booking's timeline: its e-mails, reminders (scheduled, queued, sent,
delivered, read, failed, skipped and why) and cancellation, in time order,
read from the rows that already exist (GET /api/bookings/{id}/timeline/ and
the booking's admin page)."""

from datetime import datetime
from typing import Any

from bookings.models import Booking, BookingReminder
from messaging.models import Message
from notifications.models import EmailLog


def _event(at: datetime | None, kind: str, what: str, **detail) -> dict[str, Any]:
    return {"at": at, "kind": kind, "event": what, **detail}


def _email_events(booking: Booking) -> list[dict[str, Any]]:
    events = []
    logs = EmailLog.objects.filter(data__bookingId=str(booking.pk))
    for log in logs.order_by("created_at"):
        detail = {"template": log.template, "id": str(log.pk)}
        events.append(_event(log.created_at, "email", "queued", **detail))
        if log.sent_at:
            events.append(_event(log.sent_at, "email", "sent", **detail))
        elif log.status == EmailLog.Status.FAILED:
            events.append(
                _event(log.updated_at, "email", "failed", reason=log.error, **detail)
            )
    return events


def _reminder_events(booking: Booking) -> list[dict[str, Any]]:
    reminders = list(booking.reminders.all())
    wamids = [r.wamid for r in reminders if r.wamid]
    messages = {m.wamid: m for m in Message.objects.filter(wamid__in=wamids)}
    events = []
    for reminder in reminders:
        detail = {"reminder": reminder.kind, "id": reminder.pk}
        events.append(
            _event(
                reminder.created_at,
                "reminder",
                "scheduled",
                due_at=reminder.due_at,
                **detail,
            )
        )
        if reminder.queued_at:
            events.append(_event(reminder.queued_at, "reminder", "queued", **detail))
        if reminder.sent_at:
            events.append(_event(reminder.sent_at, "reminder", "sent", **detail))
        if reminder.status in (
            BookingReminder.Status.SKIPPED,
            BookingReminder.Status.FAILED,
        ):
            events.append(
                _event(
                    reminder.updated_at,
                    "reminder",
                    reminder.status,
                    reason=reminder.reason,
                    **detail,
                )
            )
        message = messages.get(reminder.wamid)
        if message is None:
            continue
        for status, at in (
            ("delivered", message.delivered_at),
            ("read", message.read_at),
            ("failed", message.failed_at),
        ):
            if at:
                reason = (
                    (message.error or {}).get("title", "") if status == "failed" else ""
                )
                events.append(_event(at, "reminder", status, reason=reason, **detail))
    return events


def booking_timeline(*, booking: Booking) -> list[dict[str, Any]]:
    """Oldest first; each event has ``at``, ``kind`` (booking, email,
    reminder), ``event`` and its details (template, reminder, reason)."""
    events = [_event(booking.created_at, "booking", "created")]
    events += _email_events(booking)
    events += _reminder_events(booking)
    if booking.status == Booking.Status.CANCELLED:
        events.append(_event(booking.updated_at, "booking", "cancelled"))
    return sorted(
        events, key=lambda e: (e["at"] is None, e["at"] or booking.created_at)
    )
