import uuid
from collections import defaultdict
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from bookings.models import Booking, BookingReminder, Salon
from messaging.models import Conversation, Message
from saas.tenancy import salons_for, scope_to_user


def salon_list(*, user) -> QuerySet[Salon]:
    return salons_for(user)


def booking_list(
    *, user, salon_id=None, status: str | None = None
) -> QuerySet[Booking]:
    bookings = scope_to_user(
        Booking.objects.select_related("salon"), user, salon_path="salon"
    )
    if salon_id:
        bookings = bookings.filter(salon_id=salon_id)
    if status:
        bookings = bookings.filter(status=status)
    return bookings


# Outbound messages that left our queue, and those of them that arrived.
_DISPATCHED = ("sent", "delivered", "read", "failed")
_ARRIVED = ("delivered", "read")


def _today_filter(salons: list[tuple[uuid.UUID, str]], now: datetime) -> Q:
    """Bookings starting today in their own salon's time zone, one range per zone
    so the (salon, start_at) index serves it."""
    salons_by_zone: dict[str, list[uuid.UUID]] = defaultdict(list)
    for salon_id, zone in salons:
        salons_by_zone[zone].append(salon_id)
    condition = Q()
    for zone, salon_ids in salons_by_zone.items():
        tz = ZoneInfo(zone)
        today = now.astimezone(tz).date()
        start = datetime.combine(today, time.min, tzinfo=tz)
        end = datetime.combine(today + timedelta(days=1), time.min, tzinfo=tz)
        condition |= Q(salon_id__in=salon_ids, start_at__gte=start, start_at__lt=end)
    return condition


def dashboard_stats(*, user, salon_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Dashboard numbers over one of the user's salons, or all of them.

    Four queries whatever the data size: the salons in scope, one aggregate over
    their bookings, a count of conversations, and messages grouped by direction
    and status (an index-only scan of the (salon, direction, status) index).
    """
    salons = salons_for(user)
    if salon_id is not None:
        salons = salons.filter(pk=salon_id)
    salon_zones = list(salons.order_by().values_list("pk", "timezone"))
    if salon_id is not None and not salon_zones:
        raise Http404("No such salon.")
    now = timezone.now()
    stats: dict[str, Any] = {
        "bookings_total": 0,
        "bookings_today": 0,
        "bookings_upcoming": 0,
        "bookings_by_status": dict.fromkeys(Booking.Status.values, 0),
        "conversations_total": 0,
        "messages_inbound": 0,
        "messages_outbound": 0,
        "messages_failed": 0,
        "delivery_rate": None,
        "reminders_sent": 0,
        "generated_at": now.isoformat(),
    }
    if not salon_zones:
        return stats
    salon_ids = [pk for pk, _ in salon_zones]

    by_status = {
        f"status_{status}": Count("pk", filter=Q(status=status))
        for status in Booking.Status.values
    }
    bookings = Booking.objects.filter(salon_id__in=salon_ids).aggregate(
        total=Count("pk"),
        today=Count("pk", filter=_today_filter(salon_zones, now)),
        upcoming=Count(
            "pk", filter=Q(start_at__gte=now, status__in=Booking.ACTIVE_STATUSES)
        ),
        **by_status,
    )
    stats["bookings_total"] = bookings["total"]
    stats["bookings_today"] = bookings["today"]
    stats["bookings_upcoming"] = bookings["upcoming"]
    stats["reminders_sent"] = BookingReminder.objects.filter(
        booking__salon_id__in=salon_ids, status=BookingReminder.Status.SENT
    ).count()
    stats["bookings_by_status"] = {
        status: bookings[f"status_{status}"] for status in Booking.Status.values
    }

    stats["conversations_total"] = Conversation.objects.filter(
        salon_id__in=salon_ids
    ).count()
    message_counts = (
        Message.objects.filter(salon_id__in=salon_ids)
        .order_by()
        .values_list("direction", "status")
        .annotate(n=Count("*"))
    )
    outbound: dict[str, int] = defaultdict(int)
    for direction, status, n in message_counts:
        if direction == Message.Direction.INBOUND:
            stats["messages_inbound"] += n
        else:
            stats["messages_outbound"] += n
            outbound[status] += n
        if status == Message.Status.FAILED:
            stats["messages_failed"] += n
    dispatched = sum(outbound[status] for status in _DISPATCHED)
    if dispatched:
        arrived = sum(outbound[status] for status in _ARRIVED)
        stats["delivery_rate"] = round(arrived / dispatched, 4)
    return stats
