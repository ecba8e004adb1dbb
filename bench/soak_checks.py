"""The soak's drain, counts, invariants and report (bench/soak.py)."""

import os
import time
from dataclasses import dataclass, field

import psycopg

from bench.harness import percentile
from bench.soak_load import Load, Sample
from tests.smtp import SMTPServer

CONSOLE_SEND = "WhatsApp template from"


@dataclass
class Timeline:
    start: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)
    broker_window: tuple[float, float] | None = None
    cache_window: tuple[float, float] | None = None
    # The scale-out mode's: (begin, end, "any" failure or only "no answer").
    fault_windows: list[tuple[float, float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        at = time.monotonic() - self.start
        self.events.append((round(at, 1), what))
        print(f"soak: t={at:6.1f}s {what}", flush=True)

    def excuses(self, s: Sample) -> bool:
        """True when a 5xx or unanswered request fell in a fault's window."""
        at = s.sent - self.start
        window = self.broker_window
        if window is not None and window[0] <= at <= window[1]:
            return True
        return any(
            begin <= at <= end and (kind == "any" or s.status == 0)
            for begin, end, kind in self.fault_windows
        )


def db_counts(db_url: str, load: Load) -> dict:
    with psycopg.connect(db_url) as conn:
        one = lambda sql, *p: conn.execute(sql, p).fetchone()[0]  # noqa: E731
        stored = [
            r[0]
            for r in conn.execute(
                "SELECT wamid FROM messaging_message "
                "WHERE direction = 'in' AND wamid LIKE 'wamid.soak.in.%'"
            )
        ]
        read = {
            r[0]
            for r in conn.execute(
                "SELECT wamid FROM messaging_message "
                "WHERE direction = 'out' AND status = 'read'"
            )
        }
        return {
            "stored": stored,
            "read": read,
            "events_pending": one(
                "SELECT count(*) FROM messaging_webhookevent WHERE status = 'pending'"
            ),
            "events_failed": one(
                "SELECT count(*) FROM messaging_webhookevent WHERE status = 'failed'"
            ),
            "bookings": one("SELECT count(*) FROM bookings_booking"),
            "bookings_with_email": one(
                "SELECT count(*) FROM bookings_booking WHERE customer_email <> ''"
            ),
            "reminders": dict(
                conn.execute(
                    "SELECT status, count(*) FROM bookings_bookingreminder "
                    "WHERE kind = 'day_before' GROUP BY status"
                ).fetchall()
            ),
            "reminder_messages": one(
                "SELECT count(*) FROM messaging_message WHERE direction = 'out' "
                "AND content ? 'booking_reminder'"
            ),
            "reminder_wamids": one(
                "SELECT count(DISTINCT wamid) FROM messaging_message "
                "WHERE direction = 'out' AND content ? 'booking_reminder'"
            ),
            "emails": dict(
                conn.execute(
                    "SELECT status, count(*) FROM notifications_emaillog "
                    "WHERE template = 'booking_confirmation' GROUP BY status"
                ).fetchall()
            ),
        }


def drained(db_url: str, load: Load, smtp: SMTPServer) -> tuple[bool, dict]:
    counts = db_counts(db_url, load)
    reminders, emails = counts["reminders"], counts["emails"]
    done = (
        counts["events_pending"] == 0
        and load.acked_messages <= set(counts["stored"])
        and load.acked_statuses <= counts["read"]
        and reminders.get("pending", 0) + reminders.get("queued", 0) == 0
        and emails.get("queued", 0) == 0
        and len(smtp.received) >= emails.get("sent", 0)
    )
    return done, counts


def summarize(
    args, load, timeline, counts, smtp, product, console_sends: int, drain_s
) -> dict:
    """``product``: its ``peak_rss`` and ``unexpected_exits``; ``console_sends``:
    the reminders the reminder workers' logs say they sent."""
    stored = counts["stored"]
    acked = load.acked_messages
    reminders, emails = counts["reminders"], counts["emails"]
    received = smtp.received
    message_ids = {str(m.message["Message-ID"]) for m in received}
    window = timeline.broker_window
    where, key = (
        ("the failover and web-kill windows", "fault_windows")
        if args.scale_out
        else ("the broker restart window", "broker_window")
    )
    failures = [s for s in load.samples if s.status >= 500 or s.status == 0]
    outside = [s for s in failures if not timeline.excuses(s)]
    endpoints = {}
    for s in load.samples:
        endpoints.setdefault(s.endpoint, []).append(s)
    latency = {
        name: {
            "requests": len(rows),
            "2xx": sum(200 <= r.status < 300 for r in rows),
            "4xx": sum(400 <= r.status < 500 for r in rows),
            "5xx": sum(r.status >= 500 for r in rows),
            "no_answer": sum(r.status == 0 for r in rows),
            "p50_ms": round(percentile([r.latency for r in rows], 50) * 1000, 1),
            "p99_ms": round(percentile([r.latency for r in rows], 99) * 1000, 1),
        }
        for name, rows in sorted(endpoints.items())
    }
    sent_reminders = reminders.get("sent", 0)
    invariants = {
        "webhooks: 0 lost": len(acked - set(stored)) == 0,
        "webhooks: 0 duplicated": len(stored) == len(set(stored)),
        "webhook events: none pending or failed": counts["events_pending"] == 0
        and counts["events_failed"] == 0,
        "statuses: every acknowledged one applied": load.acked_statuses
        <= counts["read"],
        "statuses: one acknowledged per outbound message": len(load.acked_statuses)
        == counts["reminder_messages"],
        "bookings: every 201 stored": counts["bookings"] >= load.bookings_created,
        "reminders: every due one sent": sent_reminders == counts["bookings"],
        "reminders: exactly once (rows = messages = wamids = sends)": sent_reminders
        == counts["reminder_messages"]
        == counts["reminder_wamids"]
        == console_sends,
        "e-mails: every booking's one logged and sent": emails.get("sent", 0)
        == counts["bookings_with_email"]
        and sum(emails.values()) == counts["bookings_with_email"],
        "e-mails: received once (SMTP = EmailLog sent)": len(received)
        == len(message_ids)
        == emails.get("sent", 0),
        f"HTTP: 0 5xx / no answer outside {where}": not outside,
        "load: every stream answered": all(v["2xx"] > 0 for v in latency.values()),
        "drained in time": drain_s is not None,
    }
    return {
        "duration_s": args.duration,
        "drain_s": None if drain_s is None else round(drain_s, 1),
        "timeline": timeline.events,
        "broker_window_s": window,
        "cache_window_s": timeline.cache_window,
        **(
            {"fault_windows_s": timeline.fault_windows, "retried": dict(load.retried)}
            if args.scale_out
            else {}
        ),
        "webhooks": {
            "acknowledged": len(acked),
            "stored": len(stored),
            "lost": len(acked - set(stored)),
            "duplicated": len(stored) - len(set(stored)),
            "events_failed": counts["events_failed"],
        },
        "statuses": {
            "acknowledged": len(load.acked_statuses),
            "applied": len(load.acked_statuses & counts["read"]),
        },
        "bookings": {
            "created_201": load.bookings_created,
            "stored": counts["bookings"],
            "with_email": counts["bookings_with_email"],
        },
        "reminders": {
            "rows": reminders,
            "messages": counts["reminder_messages"],
            "distinct_wamids": counts["reminder_wamids"],
            "console_sends": console_sends,
        },
        "emails": {
            "log": emails,
            "smtp_received": len(received),
            "distinct_message_ids": len(message_ids),
        },
        "http": {
            "requests": len(load.samples),
            "5xx_or_no_answer": len(failures),
            f"in_{key}": len(failures) - len(outside),
            f"outside_{key}": len(outside),
            "outside_examples": [
                f"t={s.sent - timeline.start:.1f}s {s.endpoint} {s.status} {s.error}"
                for s in outside[:10]
            ],
        },
        "latency": latency,
        "unexpected_exits": product.unexpected_exits,
        "peak_rss_mb": {
            name: round(rss / 2**20, 1) for name, rss in product.peak_rss.items()
        },
        "load_average": os.getloadavg(),
        "invariants": invariants,
        "ok": all(invariants.values()),
    }


def report(summary: dict, extra: list[str] | None = None) -> None:
    """Prints the summary; ``extra``: lines of the scale-out mode's own."""
    w, st, r, e, h = (
        summary["webhooks"],
        summary["statuses"],
        summary["reminders"],
        summary["emails"],
        summary["http"],
    )
    print()
    print(f"soak: {summary['duration_s']:.0f}s load, drained in {summary['drain_s']}s")
    print(
        f"webhooks: {w['acknowledged']} acknowledged, {w['stored']} stored, "
        f"{w['lost']} lost, {w['duplicated']} duplicated"
    )
    print(f"statuses: {st['acknowledged']} acknowledged, {st['applied']} applied")
    print(f"bookings: {summary['bookings']}")
    print(
        f"reminders: rows {r['rows']}, {r['messages']} messages, "
        f"{r['distinct_wamids']} distinct wamids, {r['console_sends']} sends"
    )
    print(
        f"e-mails: log {e['log']}, SMTP received {e['smtp_received']} "
        f"({e['distinct_message_ids']} distinct)"
    )
    if "in_broker_window" in h:
        print(
            f"HTTP: {h['requests']} requests, 5xx/no answer {h['5xx_or_no_answer']} "
            f"({h['in_broker_window']} in the broker window "
            f"{summary['broker_window_s']}, "
            f"{h['outside_broker_window']} outside) {h['outside_examples']}"
        )
    else:
        print(
            f"HTTP: {h['requests']} requests, 5xx/no answer {h['5xx_or_no_answer']} "
            f"({h['in_fault_windows']} in the fault windows "
            f"{summary['fault_windows_s']}, {h['outside_fault_windows']} outside) "
            f"{h['outside_examples']}; webhooks retried {summary['retried']}"
        )
    print()
    print("| endpoint | requests | 2xx | 4xx | 5xx | no answer | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, v in summary["latency"].items():
        print(
            f"| {name} | {v['requests']} | {v['2xx']} | {v['4xx']} | {v['5xx']} | "
            f"{v['no_answer']} | {v['p50_ms']} | {v['p99_ms']} |"
        )
    print()
    print("| process (whole group) | peak RSS MB |")
    print("|---|---|")
    for name, mb in summary["peak_rss_mb"].items():
        print(f"| {name} | {mb} |")
    for exit_ in summary["unexpected_exits"]:
        print(f"unexpected exit (supervisor restarted it): {exit_}")
    for line in extra or []:
        print(line)
    print()
    for name, ok in summary["invariants"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"soak: {'OK' if summary['ok'] else 'FAILED'}", flush=True)
