"""Bookings made in Django admin go through the same service as the API."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.utils import timezone

from bookings.models import Booking, BookingReminder
from notifications.models import EmailLog
from tests.factories import SalonFactory

pytestmark = pytest.mark.django_db

INLINE = {
    "reminders-TOTAL_FORMS": "0",
    "reminders-INITIAL_FORMS": "0",
    "reminders-MIN_NUM_FORMS": "0",
    "reminders-MAX_NUM_FORMS": "0",
}


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def form(salon, start, **overrides) -> dict:
    local = timezone.localtime(start)
    return {
        "salon": str(salon.pk),
        "customer_name": "Maria Gomez",
        "customer_phone": "+34 612 345 678",
        "customer_email": "maria@example.com",
        "service_name": "Haircut",
        "start_at_0": local.strftime("%Y-%m-%d"),
        "start_at_1": local.strftime("%H:%M:%S"),
        "status": "pending",
        **INLINE,
        **overrides,
    }


def test_admin_add_uses_the_service(admin_client):
    salon = SalonFactory()
    start = (timezone.now() + timedelta(days=3)).replace(microsecond=0)
    response = admin_client.post("/admin/bookings/booking/add/", form(salon, start))
    assert response.status_code == 302, response.content.decode()[:3000]
    booking = Booking.objects.get()
    assert booking.customer_phone == "+34612345678"
    assert (
        BookingReminder.objects.filter(booking=booking, status="pending").count() == 2
    )
    assert EmailLog.objects.filter(template="booking_confirmation").count() == 1
    # The admin's own record points at the booking the service created.
    assert LogEntry.objects.get().object_id == str(booking.pk)


def test_admin_refuses_a_past_start_and_saves_nothing(admin_client):
    salon = SalonFactory()
    start = timezone.now() - timedelta(hours=2)
    response = admin_client.post("/admin/bookings/booking/add/", form(salon, start))
    assert response.status_code == 200
    assert "The start must be in the future." in response.content.decode()
    assert not Booking.objects.exists() and not EmailLog.objects.exists()


def test_admin_cancel_and_reschedule_go_through_the_service(admin_client):
    salon = SalonFactory()
    start = (timezone.now() + timedelta(days=3)).replace(microsecond=0)
    admin_client.post("/admin/bookings/booking/add/", form(salon, start))
    booking = Booking.objects.get()
    change = f"/admin/bookings/booking/{booking.pk}/change/"

    later = start + timedelta(days=1)
    assert admin_client.post(change, form(salon, later)).status_code == 302
    assert BookingReminder.objects.get(booking=booking, kind="day_before").due_at == (
        later - timedelta(days=1)
    )

    assert (
        admin_client.post(change, form(salon, later, status="cancelled")).status_code
        == 302
    )
    assert set(booking.reminders.values_list("status", flat=True)) == {"skipped"}
    assert EmailLog.objects.filter(template="booking_cancelled").count() == 1


def test_failed_reminders_show_their_reason_in_admin(admin_client):
    salon = SalonFactory()
    start = timezone.now() + timedelta(days=3)
    admin_client.post("/admin/bookings/booking/add/", form(salon, start))
    BookingReminder.objects.filter(kind="day_before").update(
        status="failed", reason="no approved WhatsApp template 'booking_reminder'"
    )
    page = admin_client.get("/admin/bookings/bookingreminder/?status__exact=failed")
    assert page.status_code == 200
    assert "no approved WhatsApp template" in page.content.decode()
    booking_page = admin_client.get(
        f"/admin/bookings/booking/{Booking.objects.get().pk}/change/"
    )
    assert "no approved WhatsApp template" in booking_page.content.decode()


def test_admin_salon_add_welcomes_the_owner(admin_client, user):
    response = admin_client.post(
        "/admin/bookings/salon/add/",
        {
            "owner": str(user.pk),
            "name": "Studio",
            "whatsapp_phone_number_id": "777000000000777",
            "timezone": "UTC",
            "language": "en_US",
            "email": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    log = EmailLog.objects.get()
    assert (log.template, log.to) == ("salon_welcome", user.email)


def test_email_log_is_listed_in_admin(admin_client, user):
    from notifications.services import email_enqueue

    email_enqueue(
        to="x@example.com",
        template="salon_welcome",
        data={"ownerName": "x", "salonName": "y"},
    )
    page = admin_client.get("/admin/notifications/emaillog/")
    assert page.status_code == 200 and "x@example.com" in page.content.decode()
