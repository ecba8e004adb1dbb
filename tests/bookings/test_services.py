"""Booking rules: reminder rows, e-mails, cancelling, rescheduling, bad input."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError

from bookings import reminders as booking_reminders
from bookings import services
from bookings.models import Booking, BookingReminder
from notifications.models import EmailLog
from tests.factories import BookingFactory, SalonFactory, UserFactory
from tests.utils import queued_jobs

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY, HOUR = BookingReminder.Kind.DAY_BEFORE, BookingReminder.Kind.HOUR_BEFORE


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def salon(user):
    return SalonFactory(owner=user, name="Studio", timezone="Europe/Madrid")


def create(salon, **overrides) -> Booking:
    args = {
        "salon": salon,
        "customer_name": "Maria Gomez",
        "customer_phone": "+34 612 345 678",
        "customer_email": "maria@example.com",
        "service_name": "Haircut",
        "start_at": NOW + timedelta(days=3),
        **overrides,
    }
    return services.booking_create(**args)


def reminders(booking) -> dict[str, BookingReminder]:
    return {r.kind: r for r in BookingReminder.objects.filter(booking=booking)}


def test_create_makes_both_reminders_and_mails_the_confirmation(
    salon, django_capture_on_commit_callbacks
):
    start = NOW + timedelta(days=3)
    with django_capture_on_commit_callbacks(execute=True):
        booking = create(salon, start_at=start)

    assert booking.customer_phone == "+34612345678"
    rows = reminders(booking)
    assert rows[DAY].due_at == start - timedelta(hours=24)
    assert rows[DAY].send_by == start - timedelta(hours=12)
    assert rows[HOUR].due_at == start - timedelta(hours=1)
    assert rows[HOUR].send_by == start - timedelta(minutes=30)
    assert {r.status for r in rows.values()} == {"pending"}
    assert all(r.booking_start_at == start for r in rows.values())

    log = EmailLog.objects.get()
    assert (log.template, log.to, log.status) == (
        "booking_confirmation",
        "maria@example.com",
        "queued",
    )
    # 09:00 UTC on 4 December is 10:00 in Madrid.
    assert log.data["serviceDate"] == "Friday 4 December 2026, 10:00"
    assert log.data["salonName"] == "Studio"
    [job] = queued_jobs("notification:email")
    assert job["kwargs"]["log_id"] == str(log.pk)


def test_no_customer_email_no_confirmation(salon):
    create(salon, customer_email="")
    assert not EmailLog.objects.exists()


@pytest.mark.parametrize(
    "ahead, day_before, hour_before",
    [
        (timedelta(hours=20), "pending", "pending"),  # due 4 h ago, still worth it
        (timedelta(hours=11), "skipped", "pending"),
        (timedelta(minutes=40), "skipped", "pending"),
        (timedelta(minutes=20), "skipped", "skipped"),
    ],
)
def test_late_bookings_keep_the_reminders_still_worth_sending(
    salon, ahead, day_before, hour_before
):
    rows = reminders(create(salon, start_at=NOW + ahead))
    assert (rows[DAY].status, rows[HOUR].status) == (day_before, hour_before)
    if day_before == "skipped":
        assert rows[DAY].reason == "too late: less than 12 h before the start"
    if hour_before == "skipped":
        assert rows[HOUR].reason == "too late: less than 30 min before the start"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"customer_phone": "612345678"}, "customer_phone"),
        ({"customer_phone": "+1 not a phone"}, "customer_phone"),
        ({"start_at": NOW - timedelta(minutes=1)}, "start_at"),
        ({"start_at": NOW}, "start_at"),
        ({"service_name": "  "}, "service_name"),
        ({"customer_email": "maria@"}, "customer_email"),
    ],
)
def test_bad_input_is_refused_and_leaves_nothing(
    salon, overrides, field, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(ValidationError) as caught:
            create(salon, **overrides)
    assert field in caught.value.message_dict
    assert callbacks == []
    assert not Booking.objects.exists()
    assert not BookingReminder.objects.exists()
    assert not EmailLog.objects.exists()


def test_another_tenants_salon_is_refused(salon, other_user):
    with pytest.raises(ValidationError) as caught:
        create(salon, actor=other_user)
    assert "salon" in caught.value.message_dict
    assert not Booking.objects.exists() and not EmailLog.objects.exists()
    create(salon, actor=UserFactory(is_staff=True))  # staff may


def test_cancel_skips_pending_reminders_keeps_sent_and_mails(
    salon, django_capture_on_commit_callbacks
):
    booking = create(salon)
    BookingReminder.objects.filter(booking=booking, kind=DAY).update(status="sent")
    EmailLog.objects.all().delete()

    with django_capture_on_commit_callbacks(execute=True):
        services.booking_cancel(booking=booking)

    rows = reminders(booking)
    assert rows[DAY].status == "sent"
    assert (rows[HOUR].status, rows[HOUR].reason) == ("skipped", "booking cancelled")
    log = EmailLog.objects.get()
    assert (log.template, log.to) == ("booking_cancelled", "maria@example.com")
    assert [j["kwargs"]["data"]["template"] for j in queued_jobs("notification:email")]


def test_cancel_twice_mails_once(salon):
    booking = create(salon)
    services.booking_cancel(booking=booking)
    services.booking_cancel(booking=booking)
    assert EmailLog.objects.filter(template="booking_cancelled").count() == 1


def test_status_cancelled_through_update_is_a_cancel(salon):
    booking = create(salon)
    services.booking_update(booking=booking, data={"status": "cancelled"})
    assert reminders(booking)[HOUR].status == "skipped"
    assert EmailLog.objects.filter(template="booking_cancelled").count() == 1


def test_completed_bookings_are_never_reminded(salon):
    booking = create(salon)
    services.booking_update(booking=booking, data={"status": "completed"})
    rows = reminders(booking)
    assert {(r.status, r.reason) for r in rows.values()} == {
        ("skipped", "booking completed")
    }


def test_new_start_reschedules_every_reminder_even_a_sent_one(salon):
    booking = create(salon)
    BookingReminder.objects.filter(booking=booking, kind=DAY).update(
        status="sent", attempts=1, wamid="wamid.old"
    )
    new_start = NOW + timedelta(days=5)
    services.booking_update(booking=booking, data={"start_at": new_start})

    rows = reminders(booking)
    assert rows[DAY].due_at == new_start - timedelta(hours=24)
    assert rows[HOUR].due_at == new_start - timedelta(hours=1)
    assert {(r.status, r.attempts, r.wamid) for r in rows.values()} == {
        ("pending", 0, "")
    }
    assert all(r.booking_start_at == new_start for r in rows.values())


def test_other_edits_leave_reminders_alone(salon):
    booking = create(salon)
    BookingReminder.objects.filter(booking=booking, kind=DAY).update(status="queued")
    services.booking_update(booking=booking, data={"customer_name": "Maria G."})
    assert reminders(booking)[DAY].status == "queued"


def test_rescheduling_into_the_past_is_refused(salon):
    booking = create(salon)
    with pytest.raises(ValidationError):
        services.booking_update(
            booking=booking, data={"start_at": NOW - timedelta(hours=1)}
        )
    assert reminders(booking)[DAY].due_at == NOW + timedelta(days=2)


def test_reactivating_a_cancelled_booking_brings_its_reminders_back(salon):
    booking = create(salon)
    services.booking_cancel(booking=booking)
    services.booking_update(booking=booking, data={"status": "confirmed"})
    assert {r.status for r in reminders(booking).values()} == {"pending"}


def test_update_never_overwrites_the_reminder_stamp(salon):
    booking = create(salon)
    stale = Booking.objects.get(pk=booking.pk)
    Booking.objects.filter(pk=booking.pk).update(
        metadata={"reminders": {"day_before": "2026-12-03T09:00:00+00:00"}}
    )
    services.booking_update(booking=stale, data={"customer_name": "M. Gomez"})
    booking.refresh_from_db()
    assert booking.customer_name == "M. Gomez"
    assert booking.metadata["reminders"]["day_before"]


def test_salon_create_welcomes_the_owner(user):
    salon = services.salon_create(
        owner=user, name="Studio", whatsapp_phone_number_id="555000000000555"
    )
    log = EmailLog.objects.get()
    assert (log.template, log.to) == ("salon_welcome", user.email)
    assert log.data == {
        "ownerName": user.username,
        "salonName": "Studio",
        "phoneNumberId": "555000000000555",
    }
    assert salon.pk


def test_reminder_schedule_keeps_the_seed_call_shape(salon):
    booking = create(salon)
    send_at = NOW + timedelta(days=2, hours=12)
    reminder = booking_reminders.reminder_schedule(
        booking_id=str(booking.pk), kind="day_before", due_at=send_at
    )
    assert (reminder.status, reminder.due_at) == ("pending", send_at)
    assert reminder.send_by > send_at
    assert BookingReminder.objects.filter(booking=booking).count() == 2
    assert queued_jobs("booking:reminder") == []  # a row, never a broker ETA


@pytest.mark.parametrize(
    "args, field",
    [
        ({"kind": "week_before"}, "reminderType"),
        ({"booking_id": "00000000-0000-0000-0000-000000000000"}, "bookingId"),
        ({"booking_id": "booking-789"}, "bookingId"),
        ({"due_at": datetime(2026, 12, 3, 9, 0)}, "sendAt"),
        ({"due_at": NOW + timedelta(days=4)}, "sendAt"),
    ],
)
def test_reminder_schedule_refuses_bad_input(salon, args, field):
    booking = create(salon)
    before = list(BookingReminder.objects.values())
    with pytest.raises(ValidationError) as caught:
        booking_reminders.reminder_schedule(
            **{
                "booking_id": booking.pk,
                "kind": "day_before",
                "due_at": NOW + timedelta(days=2),
                **args,
            }
        )
    assert field in caught.value.message_dict
    assert list(BookingReminder.objects.values()) == before


def test_reminder_schedule_refuses_inactive_bookings(salon):
    booking = BookingFactory(salon=salon, status=Booking.Status.CANCELLED)
    with pytest.raises(ValidationError):
        booking_reminders.reminder_schedule(
            booking_id=booking.pk, kind="hour_before", due_at=NOW + timedelta(days=1)
        )
