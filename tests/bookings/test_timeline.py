"""Issue 13: a booking's timeline from the rows that exist: its e-mails,
reminders (scheduled, sent, delivered, read, skipped and why) and its
cancellation, in time order; API (tenancy: 404) and the admin page."""

from datetime import timedelta

import pytest
from django.utils import timezone

from bookings.models import BookingReminder
from bookings.services import booking_cancel, booking_create
from messaging.models import Message
from notifications.models import EmailLog
from tests.factories import MessageFactory, SalonFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def booking(user):
    salon = SalonFactory(owner=user)
    booking = booking_create(
        salon=salon,
        customer_name="Maria Gomez",
        customer_phone="+16505551234",
        customer_email="maria@example.com",
        service_name="Haircut",
        start_at=timezone.now() + timedelta(days=3),
    )
    now = timezone.now()
    day, hour = booking.reminders.order_by("due_at")
    message = MessageFactory(
        conversation__salon=salon,
        direction=Message.Direction.OUTBOUND,
        status=Message.Status.READ,
        delivered_at=now + timedelta(seconds=2),
        read_at=now + timedelta(seconds=3),
    )
    BookingReminder.objects.filter(pk=day.pk).update(
        status="sent",
        queued_at=now,
        sent_at=now + timedelta(seconds=1),
        wamid=message.wamid,
    )
    EmailLog.objects.filter(template="booking_confirmation").update(
        status="sent", sent_at=now + timedelta(milliseconds=500)
    )
    return booking_cancel(booking=booking)


def test_timeline_lists_emails_reminders_and_cancellation_in_order(
    auth_client, booking
):
    response = auth_client.get(f"/api/bookings/{booking.pk}/timeline/")
    assert response.status_code == 200
    events = response.json()["events"]
    seen = [
        (e["kind"], e["event"], e.get("template") or e.get("reminder") or "")
        for e in events
    ]
    assert seen[0] == ("booking", "created", "")
    for expected in [
        ("email", "queued", "booking_confirmation"),
        ("email", "sent", "booking_confirmation"),
        ("reminder", "scheduled", "day_before"),
        ("reminder", "sent", "day_before"),
        ("reminder", "delivered", "day_before"),
        ("reminder", "read", "day_before"),
        ("reminder", "skipped", "hour_before"),
        ("booking", "cancelled", ""),
        ("email", "queued", "booking_cancelled"),
    ]:
        assert expected in seen, expected
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    order = [
        seen.index(x)
        for x in [
            ("reminder", "sent", "day_before"),
            ("reminder", "delivered", "day_before"),
            ("reminder", "read", "day_before"),
        ]
    ]
    assert order == sorted(order)
    [skipped] = [e for e in events if e["event"] == "skipped"]
    assert skipped["reason"] == "booking cancelled"


def test_timeline_of_another_tenants_booking_is_404(auth_client, api_client, victim):
    url = f"/api/bookings/{victim['booking'].pk}/timeline/"
    assert auth_client.get(url).status_code == 404
    assert api_client.get(url).status_code == 401
    assert auth_client.get("/api/bookings/not-a-uuid/timeline/").status_code == 404


def test_timeline_on_the_booking_admin_page(client, staff_user, booking):
    client.force_login(staff_user)
    html = client.get(f"/admin/bookings/booking/{booking.pk}/change/").content.decode()
    assert 'id="booking-timeline"' in html
    assert "booking_confirmation" in html and "booking cancelled" in html
