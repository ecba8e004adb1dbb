"""The whole product under a mixed load and faults, then its invariants.

Runs the processes of `make run` (the Procfile's web, workers and beat; not
Flower) on PostgreSQL, with a broker Redis and a cache Redis of their own on
free ports, WhatsApp's console backend and a local SMTP server, for a bounded
time under an open-loop mixed load on loopback:

- signed webhooks: inbound messages at a steady rate, and statuses ("read")
  for the outbound reminders the product has sent;
- REST reads (bookings, conversations) and writes (bookings, half with an
  e-mail: a booking_confirmation each) from several tenants with JWTs;
- dashboard reads; every booking starts in 23 h 59 min, so its day_before
  reminder is due at once and beat's dispatcher sends it during the run.

Meanwhile, on a schedule scaled to the duration: SIGKILL of each queue's worker
once (restarted as a supervisor would), one restart of the broker Redis (AOF
on, as in docker-compose.prod.yml), and the cache Redis stopped for a while.
After the load it waits for the product to drain, then checks and prints:
webhooks acknowledged vs messages stored (0 lost, 0 duplicated), statuses
applied, reminders sent exactly once, e-mails sent once, HTTP 5xx (0 outside
the broker restart window), p50/p99 latency per endpoint, peak RSS per process.
Exits 1 when an invariant fails.

    .venv/bin/python bench/soak.py [--duration 300] [--json summary.json]

It drops and re-creates its database (--db, default salon_soak_bench) and
stops every process it started, redis-servers included.
"""

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    Connections,
    Product,
    drop_database,
    free_port,
    http_request,
    manage,
    percentile,
    product_env,
    recreate_database,
    status_body,
    webhook_body,
    webhook_request,
)
from tests.processes import RedisServer, redis_server  # noqa: E402
from tests.smtp import SMTPServer  # noqa: E402

TENANTS = 4
PASSWORD = "soak-password-0123"
PHONE_ID = "soak-phone-{}"
CONSOLE_SEND = "WhatsApp template from"
WORKER_QUEUES = {
    "webhook": "whatsapp:webhook",
    "status": "whatsapp:message-status",
    "reminder": "booking:reminder",
    "email": "notification:email + whatsapp:outbound",
}

SETUP = """
import json
from django.contrib.auth import get_user_model
from django_celery_beat.models import IntervalSchedule, PeriodicTasks
from django.utils import timezone
from bookings.models import Salon
from messaging.models import MessageTemplate
salons = []
for n in range({tenants}):
    owner = get_user_model().objects.create_user(
        f"soak{{n}}", f"soak{{n}}@example.com", "{password}"
    )
    salon = Salon.objects.create(
        owner=owner, name=f"Soak {{n}}",
        whatsapp_phone_number_id="{phone_id}".format(n),
    )
    MessageTemplate.objects.create(
        salon=salon, name="booking_reminder", language=salon.language,
        category="utility", status="approved",
        body="Hi {{{{1}}}}, a reminder of your {{{{2}}}} on {{{{3}}}}.",
    )
    salons.append(str(salon.pk))
# Beat's every-minute jobs (reminder dispatch, webhook re-drive) tick faster,
# so a short run sees several ticks.
IntervalSchedule.objects.filter(every=1, period="minutes").update(
    every={beat_seconds}, period="seconds"
)
PeriodicTasks.objects.update_or_create(
    ident=1, defaults={{"last_update": timezone.now()}}
)
print("SALONS=" + json.dumps(salons))
"""


@dataclass
class Sample:
    endpoint: str
    sent: float  # scheduled time, time.monotonic()
    latency: float
    status: int  # 0: no answer (connection error or timeout)
    error: str = ""


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    acked_messages: set[str] = field(default_factory=set)
    acked_statuses: set[str] = field(default_factory=set)
    bookings_created: int = 0
    bookings_with_email: int = 0
    statused: set[str] = field(default_factory=set)
    outbound: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class Timeline:
    start: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)
    broker_window: tuple[float, float] | None = None
    cache_window: tuple[float, float] | None = None

    def note(self, what: str) -> None:
        at = time.monotonic() - self.start
        self.events.append((round(at, 1), what))
        print(f"soak: t={at:6.1f}s {what}", flush=True)


# --- load ---------------------------------------------------------------------


def login(port: int, username: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/auth/token/",
        data=json.dumps({"username": username, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access"]


async def stream(
    rate: float,
    until: float,
    make,  # (index) -> (endpoint, raw request, on_ok callback) or None
    load: Load,
    connections: Connections,
    tasks: set,
) -> None:
    """Open loop: request i leaves at start + i/rate whatever happened before."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    for index in itertools.count():
        due = start + index / rate
        if due >= until:
            return
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        made = make(index)
        if made is None:
            continue
        task = loop.create_task(one(due, *made, load, connections))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def one(due, endpoint, raw, on_ok, load: Load, connections) -> None:
    try:
        status = await asyncio.wait_for(connections.request(raw), timeout=30)
        error = ""
    except Exception as exc:
        status, error = 0, type(exc).__name__
    load.samples.append(Sample(endpoint, due, time.monotonic() - due, status, error))
    if 200 <= status < 300 and on_ok is not None:
        on_ok()


def poll_outbound(db_url: str, load: Load) -> None:
    """Appends the outbound messages the product sent since the last poll."""
    try:
        with psycopg.connect(db_url, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT m.wamid, c.customer_wa_id, s.whatsapp_phone_number_id "
                "FROM messaging_message m "
                "JOIN messaging_conversation c ON c.id = m.conversation_id "
                "JOIN bookings_salon s ON s.id = m.salon_id "
                "WHERE m.direction = 'out' AND m.wamid <> '' ORDER BY m.created_at"
            ).fetchall()
    except psycopg.Error as exc:
        print(f"soak: outbound poll failed: {exc}", flush=True)
        return
    known = {row[0] for row in load.outbound}
    load.outbound.extend(row for row in rows if row[0] not in known)


def outbound_poller(db_url: str, load: Load, stop: threading.Event) -> None:
    """Feeds the status stream during the load."""
    while not stop.wait(1.0):
        poll_outbound(db_url, load)


async def run_load(args, port: int, salons: list[str], tokens: list[str], load, until):
    connections = Connections(port)
    tasks: set = set()
    tenants = len(salons)

    def message(i):
        wamid = f"wamid.soak.in.{i:07d}"
        body = webhook_body(wamid, i % 300, PHONE_ID.format(i % tenants))
        return (
            "POST /webhooks/whatsapp/ (message)",
            webhook_request(port, body),
            lambda: load.acked_messages.add(wamid),
        )

    cursor = [0]  # next outbound message to report

    def status(i):
        if cursor[0] >= len(load.outbound):
            return None  # nothing new sent yet
        wamid, wa_id, phone_id = load.outbound[cursor[0]]
        cursor[0] += 1
        body = status_body(wamid, wa_id, "read", phone_id)
        return (
            "POST /webhooks/whatsapp/ (status)",
            webhook_request(port, body),
            lambda: load.acked_statuses.add(wamid),
        )

    def auth(i):
        return {"Authorization": f"Bearer {tokens[i % tenants]}"}

    reads = ["/api/bookings/", "/api/conversations/", "/api/bookings/?status=pending"]

    def rest_read(i):
        path = reads[i % len(reads)]
        return (f"GET {path}", http_request(port, "GET", path, headers=auth(i)), None)

    def rest_write(i):
        tenant = i % tenants
        start_at = datetime.now(UTC) + timedelta(hours=23, minutes=59)
        data = {
            "salon": salons[tenant],
            "customer_name": f"Soak {i}",
            "customer_phone": f"+3460{i:07d}",
            "service_name": "Haircut",
            "start_at": start_at.isoformat(),
        }
        with_email = i % 2 == 0
        if with_email:
            data["customer_email"] = f"soak{i}@example.com"
        body = json.dumps(data).encode()

        def created():
            load.bookings_created += 1
            load.bookings_with_email += with_email

        return (
            "POST /api/bookings/",
            http_request(
                port,
                "POST",
                "/api/bookings/",
                body,
                {**auth(i), "Content-Type": "application/json"},
            ),
            created,
        )

    def dashboard(i):
        path = "/api/dashboard/stats/"
        return (f"GET {path}", http_request(port, "GET", path, headers=auth(i)), None)

    streams = [
        (args.webhook_rate, message),
        (args.status_rate, status),
        (args.read_rate, rest_read),
        (args.write_rate, rest_write),
        (args.dashboard_rate, dashboard),
    ]
    await asyncio.gather(
        *(stream(rate, until, make, load, connections, tasks) for rate, make in streams)
    )
    if tasks:
        await asyncio.gather(*list(tasks))
    connections.close()


# --- faults -------------------------------------------------------------------


def faults(args, product: Product, broker: RedisServer, cache: RedisServer, timeline):
    """Runs in a thread during the load, on a schedule scaled to the duration."""
    d = args.duration
    plan = [
        (0.12, "kill", "webhook"),
        (0.22, "kill", "status"),
        (0.32, "kill", "reminder"),
        (0.42, "kill", "email"),
        (0.52, "broker", None),
        (0.66, "cache", None),
    ]
    for fraction, kind, name in plan:
        at = timeline.start + fraction * d
        while time.monotonic() < at:
            time.sleep(0.05)
        if kind == "kill":
            timeline.note(f"SIGKILL {name} worker ({WORKER_QUEUES[name]})")
            took = product.kill_and_restart(name)
            timeline.note(f"{name} worker restarted, ready after {took:.1f}s")
        elif kind == "broker":
            begin = time.monotonic()
            timeline.note(
                f"broker Redis: SHUTDOWN (AOF kept), down {args.broker_outage:.0f}s"
            )
            broker.stop()
            while time.monotonic() < begin + args.broker_outage:
                time.sleep(0.1)
            broker.start().wait_ready(timeout=30)
            end = time.monotonic() + args.broker_grace
            timeline.broker_window = (begin - timeline.start, end - timeline.start)
            timeline.note(f"broker Redis back after {time.monotonic() - begin:.1f}s")
        elif kind == "cache":
            begin = time.monotonic()
            timeline.note(f"cache Redis: stopped for {args.cache_outage:.0f}s")
            cache.stop()
            while time.monotonic() < begin + args.cache_outage:
                time.sleep(0.1)
            cache.start().wait_ready(timeout=30)
            timeline.cache_window = (
                begin - timeline.start,
                time.monotonic() - timeline.start,
            )
            timeline.note("cache Redis back")


# --- drain and invariants -----------------------------------------------------


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


def summarize(args, load, timeline, counts, smtp, product, drain_s) -> dict:
    stored = counts["stored"]
    acked = load.acked_messages
    reminders, emails = counts["reminders"], counts["emails"]
    console_sends = product.log("reminder").count(CONSOLE_SEND)
    received = smtp.received
    message_ids = {str(m.message["Message-ID"]) for m in received}
    window = timeline.broker_window

    def in_window(s: Sample) -> bool:
        return window is not None and window[0] <= s.sent - timeline.start <= window[1]

    failures = [s for s in load.samples if s.status >= 500 or s.status == 0]
    outside = [s for s in failures if not in_window(s)]
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
        "HTTP: 0 5xx / no answer outside the broker restart window": not outside,
        "load: every stream answered": all(v["2xx"] > 0 for v in latency.values()),
        "drained in time": drain_s is not None,
    }
    return {
        "duration_s": args.duration,
        "drain_s": None if drain_s is None else round(drain_s, 1),
        "timeline": timeline.events,
        "broker_window_s": window,
        "cache_window_s": timeline.cache_window,
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
            "in_broker_window": len(failures) - len(outside),
            "outside_broker_window": len(outside),
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


def report(summary: dict) -> None:
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
    print(
        f"HTTP: {h['requests']} requests, 5xx/no answer {h['5xx_or_no_answer']} "
        f"({h['in_broker_window']} in the broker window {summary['broker_window_s']}, "
        f"{h['outside_broker_window']} outside) {h['outside_examples']}"
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
    print()
    for name, ok in summary["invariants"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"soak: {'OK' if summary['ok'] else 'FAILED'}", flush=True)


# --- main ---------------------------------------------------------------------


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--cache-outage", type=float, default=30.0)
    parser.add_argument("--broker-outage", type=float, default=5.0)
    parser.add_argument(
        "--broker-grace",
        type=float,
        default=10.0,
        help="seconds after the broker is back still in its window",
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--webhook-rate", type=float, default=10.0)
    parser.add_argument("--status-rate", type=float, default=3.0)
    parser.add_argument("--read-rate", type=float, default=6.0)
    parser.add_argument("--write-rate", type=float, default=2.0)
    parser.add_argument("--dashboard-rate", type=float, default=4.0)
    parser.add_argument("--visibility-timeout", type=int, default=30)
    parser.add_argument("--beat-seconds", type=int, default=10)
    parser.add_argument("--db", default="salon_soak_bench")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", help="also write the summary to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    db_url = f"{args.pg}/{args.db}"
    web_port = free_port()
    started: list = []
    product = None
    stop_polling = threading.Event()
    stop_rss = threading.Event()
    summary = None
    try:
        broker = redis_server(log_dir=workdir, extra=["--appendonly", "yes"])
        started.append(broker)
        cache = redis_server(
            log_dir=workdir,
            extra=["--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"],
        )
        started.append(cache)
        smtp = SMTPServer().start()
        started.append(smtp)
        env = product_env(
            db_url,
            web_port,
            REDIS_HOST="127.0.0.1",
            REDIS_PORT=str(cache.port),
            REDIS_DB="0",
            REDIS_QUEUE_HOST="127.0.0.1",
            REDIS_QUEUE_PORT=str(broker.port),
            REDIS_QUEUE_DB="0",
            EMAIL_URL=smtp.url,
            # A killed worker's unacknowledged jobs come back after this.
            CELERY_VISIBILITY_TIMEOUT=str(args.visibility_timeout),
            CELERY_TASK_SOFT_TIME_LIMIT="20",
            CELERY_TASK_TIME_LIMIT="25",
            WHATSAPP_WEBHOOK_REDRIVE_AFTER_SECONDS="15",
            EMAIL_REDRIVE_AFTER_SECONDS="15",
            AUTH_THROTTLE_RATE="1000/min",
        )
        recreate_database(f"{args.pg}/postgres", args.db)
        manage(env, "migrate", "--no-input", "-v0")
        out = manage(
            env,
            "shell",
            "-c",
            SETUP.format(
                tenants=TENANTS,
                password=PASSWORD,
                phone_id=PHONE_ID,
                beat_seconds=args.beat_seconds,
            ),
            quiet=True,
        )
        salons = json.loads(out.split("SALONS=", 1)[1].strip())
        product = Product({**env, "LOG_LEVEL": "INFO"}, workdir)
        product.start()
        product.wait_ready(web_port, timeout=120)
        tokens = [login(web_port, f"soak{n}") for n in range(TENANTS)]
        print(f"soak: product up (logs in {workdir}); {args.duration:.0f}s of load")

        load = Load()
        timeline = Timeline(start=time.monotonic())
        until = timeline.start + args.duration
        poller = threading.Thread(
            target=outbound_poller, args=(db_url, load, stop_polling), daemon=True
        )
        poller.start()
        fault_errors: list[str] = []

        def fault_thread():
            try:
                faults(args, product, broker, cache, timeline)
            except Exception:
                fault_errors.append(traceback.format_exc())

        injector = threading.Thread(target=fault_thread, daemon=True)
        injector.start()

        def rss_thread():
            # Also the supervisor: a process that died by itself is started
            # again and reported.
            while not stop_rss.wait(0.5):
                product.sample_rss()
                for name in product.supervise():
                    reason = product.unexpected_exits[-1]["reason"]
                    timeline.note(f"UNEXPECTED exit of {name}, restarted: {reason}")

        threading.Thread(target=rss_thread, daemon=True).start()
        asyncio.run(run_load(args, web_port, salons, tokens, load, until))
        injector.join(timeout=120)
        if fault_errors:
            raise RuntimeError("fault injection failed:\n" + fault_errors[0])
        timeline.note("load over; draining")

        # Statuses for the reminders sent after the load: the product keeps
        # sending them while it drains; one last round reports them too.
        stop_polling.set()
        poller.join(timeout=30)
        drain_start = time.monotonic()
        drain_s = None
        while time.monotonic() - drain_start < args.drain_timeout:
            poll_outbound(db_url, load)
            asyncio.run(send_statuses(web_port, load))
            done, counts = drained(db_url, load, smtp)
            if (
                done
                and len(load.outbound) == counts["reminder_messages"]
                and len(load.acked_statuses) == len(load.outbound)
            ):
                drain_s = time.monotonic() - drain_start
                break
            time.sleep(1.0)
        stop_polling.set()
        counts = db_counts(db_url, load)
        timeline.note("drained" if drain_s is not None else "drain timed out")
        product.sample_rss()
        summary = summarize(args, load, timeline, counts, smtp, product, drain_s)
    finally:
        stop_polling.set()
        stop_rss.set()
        if product is not None:
            product.stop()
        for thing in reversed(started):
            try:
                thing.stop()
            except Exception:
                traceback.print_exc()
        if not args.keep_db:
            try:
                drop_database(f"{args.pg}/postgres", args.db)
            except psycopg.Error:
                traceback.print_exc()
    report(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    print(f"(logs in {workdir})")
    if summary["ok"] and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if summary["ok"] else 1


async def send_statuses(port: int, load: Load) -> None:
    """Report "read" for outbound messages not acknowledged yet."""
    connections = Connections(port)
    for wamid, wa_id, phone_id in list(load.outbound):
        if wamid in load.acked_statuses:
            continue
        raw = webhook_request(port, status_body(wamid, wa_id, "read", phone_id))

        def ok(w=wamid):
            load.acked_statuses.add(w)

        await one(
            time.monotonic(),
            "POST /webhooks/whatsapp/ (status)",
            raw,
            ok,
            load,
            connections,
        )
    connections.close()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
