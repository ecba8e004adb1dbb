"""dashboard_stats: the numbers, their scope, and a fixed number of queries."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.http import Http404
from django.utils import timezone

from bookings.models import Booking, BookingReminder
from bookings.selectors import dashboard_stats
from messaging.models import Message
from tests.factories import (
    BookingFactory,
    ConversationFactory,
    MessageFactory,
    SalonFactory,
)

pytestmark = pytest.mark.django_db


def local_noon(salon, days: int = 0) -> datetime:
    tz = ZoneInfo(salon.timezone)
    today = timezone.now().astimezone(tz).date()
    return datetime.combine(today + timedelta(days=days), time(12), tzinfo=tz)


@pytest.fixture
def busy_salon(user):
    """A salon with one of everything the dashboard counts."""
    salon = SalonFactory(owner=user, timezone="Pacific/Kiritimati")  # UTC+14
    BookingFactory(salon=salon, start_at=local_noon(salon), status="confirmed")
    BookingFactory(salon=salon, start_at=local_noon(salon, -1), status="completed")
    BookingFactory(salon=salon, start_at=local_noon(salon, 2), status="pending")
    BookingFactory(salon=salon, start_at=local_noon(salon, 3), status="cancelled")
    reminded = BookingFactory(
        salon=salon, start_at=local_noon(salon, 1), status="confirmed"
    )
    for kind, status in (("day_before", "sent"), ("hour_before", "pending")):
        BookingReminder.objects.create(
            booking=reminded,
            kind=kind,
            due_at=reminded.start_at,
            send_by=reminded.start_at,
            booking_start_at=reminded.start_at,
            status=status,
        )
    conversation = ConversationFactory(salon=salon)
    ConversationFactory(salon=salon)
    MessageFactory.create_batch(3, conversation=conversation)
    for status in ("sent", "delivered", "read", "failed", "queued"):
        MessageFactory(
            conversation=conversation,
            direction=Message.Direction.OUTBOUND,
            status=status,
        )
    return salon


def test_numbers_of_one_salon(user, busy_salon):
    stats = dashboard_stats(user=user, salon_id=busy_salon.pk)
    generated_at = datetime.fromisoformat(stats.pop("generated_at"))
    assert abs(generated_at - timezone.now()) < timedelta(minutes=1)
    assert stats == {
        "bookings_total": 5,
        "bookings_today": 1,
        # today's noon may have passed; tomorrow's and the day after's have not
        "bookings_upcoming": 2 + (local_noon(busy_salon) > timezone.now()),
        "bookings_by_status": {
            "pending": 1,
            "confirmed": 2,
            "cancelled": 1,
            "completed": 1,
        },
        "conversations_total": 2,
        "messages_inbound": 3,
        "messages_outbound": 5,
        "messages_failed": 1,
        "delivery_rate": 0.5,  # delivered + read over sent, delivered, read, failed
        "reminders_sent": 1,
    }


def test_today_is_each_salons_own_local_day(user):
    east = SalonFactory(owner=user, timezone="Pacific/Kiritimati")  # UTC+14
    west = SalonFactory(owner=user, timezone="Pacific/Pago_Pago")  # UTC-11
    for salon in (east, west):
        BookingFactory(salon=salon, start_at=local_noon(salon))
        BookingFactory(salon=salon, start_at=local_noon(salon, -1))
        BookingFactory(salon=salon, start_at=local_noon(salon, 1))
    assert dashboard_stats(user=user)["bookings_today"] == 2
    assert dashboard_stats(user=user, salon_id=west.pk)["bookings_today"] == 1


def test_all_salons_of_the_user_and_nobody_elses(user, other_user, busy_salon):
    second = SalonFactory(owner=user)
    BookingFactory(salon=second)
    MessageFactory(conversation__salon=second)
    theirs = SalonFactory(owner=other_user)
    BookingFactory.create_batch(4, salon=theirs)
    MessageFactory(conversation__salon=theirs)

    stats = dashboard_stats(user=user)
    assert stats["bookings_total"] == 6
    assert stats["conversations_total"] == 3
    assert stats["messages_inbound"] == 4
    assert dashboard_stats(user=other_user)["bookings_total"] == 4


def test_staff_see_every_salon(staff_user, user, other_user):
    BookingFactory(salon__owner=user)
    BookingFactory(salon__owner=other_user)
    assert dashboard_stats(user=staff_user)["bookings_total"] == 2


def test_another_tenants_salon_is_404(user, other_user):
    theirs = SalonFactory(owner=other_user)
    with pytest.raises(Http404):
        dashboard_stats(user=user, salon_id=theirs.pk)


def test_no_salons_no_data(user):
    stats = dashboard_stats(user=user)
    assert stats["bookings_total"] == 0
    assert stats["bookings_by_status"] == dict.fromkeys(Booking.Status.values, 0)
    assert stats["delivery_rate"] is None


def test_five_queries_whatever_the_number_of_salons(
    user, busy_salon, django_assert_num_queries
):
    for zone in ("UTC", "Europe/Madrid", "America/New_York"):
        salon = SalonFactory(owner=user, timezone=zone)
        BookingFactory.create_batch(3, salon=salon)
        MessageFactory.create_batch(2, conversation__salon=salon)
    with django_assert_num_queries(5):
        stats = dashboard_stats(user=user)
    assert stats["bookings_total"] == 5 + 9
