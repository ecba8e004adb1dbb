"""Booking changes as the cached dashboards apply them: what of a booking the
dashboard counts (BookingState), one committed change (BookingChange), and
the exact delta it makes to a cached value (bookings/cache.py stores them)."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bookings.models import Booking
from bookings.selectors import booking_figures

BOOKING_FIGURES = ("bookings_total", "bookings_today", "bookings_upcoming")


@dataclass(frozen=True)
class BookingState:
    """What of a booking the dashboard counts."""

    salon_id: str
    start_at: datetime
    status: str

    @classmethod
    def of(cls, booking: Booking) -> "BookingState":
        return cls(str(booking.salon_id), booking.start_at, booking.status)


@dataclass(frozen=True)
class BookingChange:
    """One booking's change by one committed transaction."""

    id: str  # unique: the xid and a per-process sequence number
    xid: int
    salon_id: str
    owner_id: int | None
    before: BookingState | None  # None: created
    after: BookingState

    def to_json(self) -> str:
        def state(s: BookingState | None):
            return None if s is None else [s.start_at.isoformat(), s.status]

        return json.dumps(
            {
                "id": self.id,
                "xid": self.xid,
                "salon": self.salon_id,
                "before": state(self.before),
                "after": state(self.after),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> "BookingChange":
        data = json.loads(raw)

        def state(s) -> BookingState | None:
            if s is None:
                return None
            return BookingState(data["salon"], datetime.fromisoformat(s[0]), s[1])

        return cls(
            data["id"],
            data["xid"],
            data["salon"],
            None,
            state(data["before"]),
            state(data["after"]),
        )


def snapshot_sees(snapshot: str, xid: int) -> bool:
    """Whether a transaction committed before ``xid`` finished is visible in a
    ``pg_current_snapshot()`` text (``xmin:xmax:xip,...``)."""
    xmin, xmax, xip = snapshot.split(":")
    if xid < int(xmin):
        return True
    return xid < int(xmax) and str(xid) not in xip.split(",")


def change_applied(
    value: dict[str, Any], change: BookingChange, zone: str
) -> dict | None:
    """``value`` with ``change`` applied, or None when it has it already."""
    if snapshot_sees(value["snapshot"], change.xid) or change.id in value["patched"]:
        return None
    stats = dict(value["stats"])
    by_status = dict(stats["bookings_by_status"])
    now = datetime.fromisoformat(stats["generated_at"])
    for sign, state in ((-1, change.before), (1, change.after)):
        if state is None:
            continue
        figures = booking_figures(
            start_at=state.start_at, status=state.status, now=now, zone=zone
        )
        for name in BOOKING_FIGURES:
            stats[name] += sign * figures[name]
        for status, n in figures["bookings_by_status"].items():
            by_status[status] = by_status.get(status, 0) + sign * n
    stats["bookings_by_status"] = by_status
    return {**value, "stats": stats, "patched": [*value["patched"], change.id]}
