import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
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


def _local_day(now: datetime, zone: str) -> tuple[datetime, datetime]:
    """[start, end) of the day ``now`` falls on in ``zone``."""
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    start = datetime.combine(today, time.min, tzinfo=tz)
    return start, datetime.combine(today + timedelta(days=1), time.min, tzinfo=tz)


def _today_filter(salons: list[tuple[uuid.UUID, str]], now: datetime) -> Q:
    """Bookings starting today in their own salon's time zone, one range per zone
    so the (salon, start_at) index serves it."""
    salons_by_zone: dict[str, list[uuid.UUID]] = defaultdict(list)
    for salon_id, zone in salons:
        salons_by_zone[zone].append(salon_id)
    condition = Q()
    for zone, salon_ids in salons_by_zone.items():
        start, end = _local_day(now, zone)
        condition |= Q(salon_id__in=salon_ids, start_at__gte=start, start_at__lt=end)
    return condition


def _upcoming_filter(now: datetime) -> Q:
    return Q(start_at__gte=now, status__in=Booking.ACTIVE_STATUSES)


def booking_figures(
    *, start_at: datetime, status: str, now: datetime, zone: str
) -> dict[str, Any]:
    """What one booking adds to the booking figures of ``dashboard_stats`` computed
    at ``now`` with its salon in ``zone``: the same definitions as its aggregate
    (tests/bookings/test_dashboard_patch.py holds them equal over random bookings).
    """
    start, end = _local_day(now, zone)
    return {
        "bookings_total": 1,
        "bookings_today": int(start <= start_at < end),
        "bookings_upcoming": int(start_at >= now and status in Booking.ACTIVE_STATUSES),
        "bookings_by_status": {status: 1},
    }


@dataclass
class DashboardSnapshot:
    """``dashboard_stats`` and what is needed to patch it exactly later: the
    PostgreSQL snapshot its queries saw (``xmin:xmax:xip,...``; None when they
    did not share one) and the time zone of each salon it covers."""

    stats: dict[str, Any]
    snapshot: str | None
    salon_zones: dict[str, str]


def dashboard_stats(*, user, salon_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Dashboard numbers over one of the user's salons, or all of them.

    Four queries whatever the data size: the salons in scope, one aggregate over
    their bookings, a count of conversations, and messages grouped by direction
    and status (an index-only scan of the (salon, direction, status) index).
    """
    return dashboard_snapshot(user=user, salon_id=salon_id).stats


def dashboard_snapshot(
    *, user, salon_id: uuid.UUID | None = None, now: datetime | None = None
) -> DashboardSnapshot:
    """``dashboard_stats`` (as of ``now``, default the current time), its queries
    in one REPEATABLE READ snapshot on PostgreSQL outside any transaction (the
    snapshot is then returned)."""
    now = now or timezone.now()
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return _dashboard_compute(user=user, salon_id=salon_id, now=now, snapshot=None)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # The first query fixes the snapshot every later query of the
        # transaction reads.
        cursor.execute("SELECT pg_current_snapshot()::text")
        (snapshot,) = cursor.fetchone()
        return _dashboard_compute(
            user=user, salon_id=salon_id, now=now, snapshot=snapshot
        )


def _dashboard_compute(
    *, user, salon_id: uuid.UUID | None, now: datetime, snapshot: str | None
) -> DashboardSnapshot:
    salons = salons_for(user)
    if salon_id is not None:
        salons = salons.filter(pk=salon_id)
    salon_zones = list(salons.order_by().values_list("pk", "timezone"))
    if salon_id is not None and not salon_zones:
        raise Http404("No such salon.")
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
    zones = {str(pk): zone for pk, zone in salon_zones}
    if not salon_zones:
        return DashboardSnapshot(stats, snapshot, zones)
    salon_ids = [pk for pk, _ in salon_zones]

    by_status = {
        f"status_{status}": Count("pk", filter=Q(status=status))
        for status in Booking.Status.values
    }
    bookings = Booking.objects.filter(salon_id__in=salon_ids).aggregate(
        total=Count("pk"),
        today=Count("pk", filter=_today_filter(salon_zones, now)),
        upcoming=Count("pk", filter=_upcoming_filter(now)),
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
    return DashboardSnapshot(stats, snapshot, zones)
