"""Benchmark: 10,000 booking reminders due in the same minute.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/salon_bench \
    REDIS_DB=12 REDIS_QUEUE_DB=13 .venv/bin/python bench/reminders.py

What it does, on a database and Redis DBs of its own (it empties them):
  1. 10,000 bookings, each with its hour_before reminder row due at T0.
  2. A booking:reminder worker as the Procfile runs it (prefork, -c 3 unless
     --concurrency), WhatsApp console backend.
  3. At T0 the dispatcher runs, as beat's every-minute tick would, in this
     process so its own time per claimed batch can be read.
  4. Waits until every row is sent; reports due -> last reminder sent.
  5. Baseline, side by side on the same worker: 10,000 booking:reminder jobs
     that find nothing to do (the floor of Celery + one query per job).
Then checks none was sent twice: 10,000 console sends, 10,000 Message rows,
10,000 distinct wamids.

With ``--backend cloud_api`` the worker sends through the cloud_api backend to
the Graph API stand-in in process mode (``python -m tests.graph_api``: 150 ms
answers, Meta's 80/s per number, pair limit), paced by the throughput governor;
it reports the sustained sends per second against the limit, due -> last sent,
none twice / none failed, Meta's refusals, and, side by side in the same run,
the CPU per send of the code before the governor (``--baseline-ref``, run from
its own source tree on ``--baseline-count`` reminders, same stand-in, same -c).

Beat ticks once a minute, so in production add up to 60 s between a due time
and the tick that dispatches it; the 2-minute target leaves room for that.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reminders_cloud import stop  # noqa: E402

for name, value in {
    "DJANGO_SETTINGS_MODULE": "saas.settings",
    "DEBUG": "false",
    "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
    "JWT_SIGNING_KEY": "bench-jwt-signing-key-not-for-production-987",
    "WHATSAPP_APP_SECRET": "bench-app-secret",
    "WHATSAPP_BACKEND": "console",
    "EMAIL_URL": "smtp://127.0.0.1:2525",
    "SECURE_SSL_REDIRECT": "false",
    "LOG_LEVEL": "WARNING",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/salon_bench",
    "REDIS_DB": "12",
    "REDIS_QUEUE_DB": "13",
}.items():
    os.environ.setdefault(name, value)

CONSOLE_SEND = "WhatsApp template from"
SUCCEEDED = "] succeeded in"


def ensure_database() -> None:
    import psycopg
    from django.conf import settings

    params = settings.DATABASES["default"]
    admin = psycopg.connect(
        host=params["HOST"] or "127.0.0.1",
        port=params["PORT"] or 5432,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [params["NAME"]]
        ).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{params["NAME"]}"')


def reset_state() -> None:
    import redis
    from django.conf import settings
    from django.db import connection

    for db in (settings.REDIS_DB, settings.REDIS_QUEUE_DB):
        if db in (0, 1):
            sys.exit("bench: refusing to empty Redis DB 0/1 (the dev ones)")
    redis.Redis.from_url(settings.REDIS_QUEUE_URL).flushdb()
    redis.Redis.from_url(settings.REDIS_CACHE_URL).flushdb()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE bookings_bookingreminder, messaging_message, "
            "messaging_conversation, messaging_messagetemplate, bookings_booking, "
            "bookings_salon CASCADE"
        )


def create_bookings(count: int, due_at):
    from django.contrib.auth import get_user_model

    from bookings.models import Booking, BookingReminder, Salon
    from messaging.models import MessageTemplate

    owner, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"email": "bench@example.com"}
    )
    salon = Salon.objects.create(
        owner=owner,
        name="Bench Salon",
        whatsapp_phone_number_id="900000000000000",
        timezone="Europe/Madrid",
    )
    MessageTemplate.objects.create(
        salon=salon,
        name="booking_reminder",
        language=salon.language,
        category="utility",
        body="Hi {{1}}, a reminder of your {{2}} on {{3}}.",
        status="approved",
    )
    start = due_at + timedelta(hours=1)
    bookings = Booking.objects.bulk_create(
        (
            Booking(
                salon=salon,
                customer_name=f"Customer {n}",
                customer_phone=f"+3461{n:07d}",
                service_name="Haircut",
                start_at=start,
            )
            for n in range(count)
        ),
        batch_size=2000,
    )
    rows = []
    for booking in bookings:
        rows.append(
            BookingReminder(
                booking=booking,
                kind="hour_before",
                due_at=due_at,
                send_by=start - timedelta(minutes=30),
                booking_start_at=start,
            )
        )
        rows.append(
            BookingReminder(
                booking=booking,
                kind="day_before",
                due_at=start - timedelta(hours=24),
                send_by=start - timedelta(hours=12),
                booking_start_at=start,
                status="skipped",
                reason="too late: less than 12 h before the start",
            )
        )
    BookingReminder.objects.bulk_create(rows, batch_size=4000)
    return salon


def start_worker(
    concurrency: int, log_path: Path, *, env_extra=None, cwd: Path = ROOT
) -> subprocess.Popen:
    # Connections kept for the whole run, so their backends' CPU can be read.
    env = {
        **os.environ,
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "CONN_MAX_AGE": "3600",
        **(env_extra or {}),
    }
    log = open(log_path, "wb")
    from queues.workers import worker_argv

    return subprocess.Popen(
        worker_argv(
            ["booking:reminder"],
            name="bench-reminder",
            concurrency=concurrency,
            pool="prefork",
        ),
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    sys.exit(f"bench: timed out after {timeout:.0f}s waiting for {what}")


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) these processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def worker_tree(pid: int) -> list[int]:
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry.name))
    return pids


def postgres_backends(database: str | None = None) -> list[int]:
    """A database's backends but ours (the worker's connections); by default
    the bench database's."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = coalesce(%s, current_database()) "
            "AND pid <> pg_backend_pid()",
            [database],
        )
        return [row[0] for row in cursor.fetchall()]


def cpu_now(worker: subprocess.Popen, database: str | None = None) -> float:
    """CPU seconds used so far by the worker's processes and their backends."""
    return process_cpu(worker_tree(worker.pid)) + process_cpu(
        postgres_backends(database)
    )


def succeeded(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count(SUCCEEDED)


def run_baseline(count: int, log_path: Path) -> float:
    """Jobs on the same queue and worker, for ids that find no row: the floor
    of Celery plus one locking query per id."""
    from bookings import reminders
    from queues.definitions import REMINDER
    from queues.publish import jobs_publish

    size = reminders.REMINDER_JOB_SIZE
    jobs = [list(range(-n - size, -n)) for n in range(0, count, size)]
    before = succeeded(log_path)
    started = time.monotonic()
    jobs_publish(
        reminders.REMINDER_SEND_TASK,
        queue=REMINDER,
        kwargs_list=[{"reminder_ids": ids} for ids in jobs],
    )
    wait_for(
        lambda: succeeded(log_path) - before >= len(jobs),
        timeout=1200,
        what="the baseline jobs",
        interval=0.5,
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--lead-in", type=float, default=5.0, help="seconds to T0")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--backend", choices=["console", "cloud_api"], default="console"
    )
    parser.add_argument("--latency", type=float, default=0.15, help="Meta's answer")
    parser.add_argument("--baseline-count", type=int, default=1000)
    parser.add_argument("--baseline-ref", default=None, help="code before the governor")
    parser.add_argument(
        "--timeline", action="store_true", help="print accepted sends per second"
    )
    args = parser.parse_args()
    if args.backend == "cloud_api":
        return main_cloud(args)

    import django

    ensure_database()
    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Max
    from django.utils import timezone

    from bookings import reminders
    from bookings.models import BookingReminder
    from messaging.models import Message

    call_command("migrate", verbosity=0)
    reset_state()
    log_path = ROOT / "var" / "bench-reminders-worker.log"
    log_path.parent.mkdir(exist_ok=True)

    print(
        f"bench: {args.count} reminders, worker -c {args.concurrency}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    setup_started = time.monotonic()
    worker = start_worker(args.concurrency, log_path)
    try:
        due_at = timezone.now() + timedelta(seconds=args.lead_in + 30)
        create_bookings(args.count, due_at)
        print(f"setup: {time.monotonic() - setup_started:.1f}s")
        wait_for(
            lambda: " ready." in log_path.read_text(errors="replace"),
            timeout=60,
            what="the worker",
        )
        # T0: the due time. Sleep until it, then dispatch as beat's tick would.
        time.sleep(max((due_at - timezone.now()).total_seconds(), 0))
        cpu_before = cpu_now(worker)
        dispatch_started = time.monotonic()
        report = reminders.reminder_dispatch()
        dispatch_seconds = time.monotonic() - dispatch_started
        connection.close()

        pending = BookingReminder.objects.filter(kind="hour_before").exclude(
            status="sent"
        )
        wait_for(lambda: not pending.exists(), timeout=1200, what="all reminders sent")
        wall = time.monotonic() - dispatch_started
        cpu_reminders = cpu_now(worker) - cpu_before
        last_sent = BookingReminder.objects.aggregate(last=Max("sent_at"))["last"]
        due_to_last = (last_sent - due_at).total_seconds()

        # The exactly-once window: from the send's return (sent_at is taken
        # just before it, the console send takes microseconds) to the row's
        # last write before COMMIT (updated_at).
        windows = sorted(
            (updated - sent).total_seconds() * 1000
            for sent, updated in BookingReminder.objects.filter(
                kind="hour_before"
            ).values_list("sent_at", "updated_at")
        )

        # None twice.
        log = log_path.read_text(errors="replace")
        sends = log.count(CONSOLE_SEND)
        messages = Message.objects.count()
        wamids = Message.objects.values("wamid").distinct().count()
        reminder_runs = log.count(SUCCEEDED)

        baseline = cpu_baseline = None
        if not args.skip_baseline:
            cpu_before = cpu_now(worker)
            baseline = run_baseline(args.count, log_path)
            cpu_baseline = cpu_now(worker) - cpu_before
    finally:
        stop(worker)

    batch_seconds = [seconds for _, seconds in report.batches]
    print()
    print(f"dispatcher: {report.queued} queued in {len(report.batches)} batches")
    print(
        f"  per batch of {reminders.REMINDER_DISPATCH_BATCH}: "
        f"mean {statistics.mean(batch_seconds) * 1000:.0f} ms, "
        f"max {max(batch_seconds) * 1000:.0f} ms "
        f"(claim FOR UPDATE SKIP LOCKED + mark queued + publish)"
    )
    print(f"  whole dispatch: {dispatch_seconds:.2f}s")
    print(f"due -> last reminder sent: {due_to_last:.1f}s (target < 120 s)")
    print(
        "window send -> last write before COMMIT: "
        f"median {windows[len(windows) // 2]:.1f} ms, "
        f"p99 {windows[int(len(windows) * 0.99)]:.1f} ms"
    )
    print(
        f"dispatch -> all rows sent (wall): {wall:.1f}s, "
        f"{args.count / wall:.0f} reminders/s"
    )
    per_reminder = cpu_reminders / args.count
    print(
        f"CPU per reminder (worker processes + their PostgreSQL backends): "
        f"{per_reminder * 1000:.2f} ms; two idle cores would send "
        f"{2 / per_reminder:.0f}/s, 10,000 in {10_000 * per_reminder / 2:.0f}s"
    )
    if baseline is not None:
        print(
            f"baseline (same worker, jobs for {args.count} ids that find no row): "
            f"{baseline:.1f}s, {args.count / baseline:.0f} jobs/s"
        )
        print(
            f"  CPU per id: {cpu_baseline / args.count * 1000:.2f} ms; "
            f"ratio reminders / baseline: wall {wall / baseline:.2f}x, "
            f"CPU {cpu_reminders / cpu_baseline:.2f}x"
        )
    print(
        f"exactly once: {sends} console sends, {messages} messages, "
        f"{wamids} distinct wamids, {reminder_runs} jobs of up to "
        f"{reminders.REMINDER_JOB_SIZE} for {args.count} reminders"
    )
    ok = sends == messages == wamids == args.count and due_to_last < 120
    print("result:", "OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


def _cloud_figures(*, wall, cpu, count, due_at, last_sent, load_before, sends, **rows):
    """One cloud run's figures; ``rows``: sent, failed, messages, wamids."""
    return {
        "wall": wall,
        "cpu_per_send": cpu / count,
        "due_to_last": (last_sent - due_at).total_seconds() if last_sent else None,
        **rows,
        "load": (load_before, os.getloadavg()[0]),
        **sends,
    }


def _cloud_run(args, *, count: int, base_url: str, log_path: Path, cwd: Path):
    """Bookings due at T0, a worker from ``cwd`` sending to the stand-in, the
    dispatcher at T0; returns the figures once every reminder is sent."""
    from django.db import connection
    from django.db.models import Max
    from django.utils import timezone

    from bench.reminders_cloud import cloud_env, sends_report
    from bookings import reminders
    from bookings.models import BookingReminder
    from messaging.models import Message
    from tests.graph_api import GraphApiClient

    reset_state()
    graph = GraphApiClient(base_url)
    graph.reset()
    log_path.write_bytes(b"")
    worker = start_worker(
        args.concurrency, log_path, env_extra=cloud_env(base_url), cwd=cwd
    )
    try:
        due_at = timezone.now() + timedelta(seconds=args.lead_in + 30)
        salon = create_bookings(count, due_at)
        wait_for(
            lambda: " ready." in log_path.read_text(errors="replace"),
            timeout=60,
            what="the worker",
        )
        time.sleep(max((due_at - timezone.now()).total_seconds(), 0))
        cpu_before = cpu_now(worker)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        reminders.reminder_dispatch()
        connection.close()
        rows = BookingReminder.objects.filter(kind="hour_before")
        wait_for(
            lambda: not rows.filter(status__in=["pending", "queued"]).exists(),
            timeout=3600,
            what="every reminder sent or closed",
            interval=0.5,
        )
        wall = time.monotonic() - started
        cpu = cpu_now(worker) - cpu_before
        last_sent = rows.aggregate(last=Max("sent_at"))["last"]
        return _cloud_figures(
            wall=wall,
            cpu=cpu,
            count=count,
            due_at=due_at,
            last_sent=last_sent,
            load_before=load_before,
            sends=sends_report(graph, salon.whatsapp_phone_number_id, count),
            sent=rows.filter(status="sent").count(),
            failed=rows.filter(status="failed").count(),
            messages=Message.objects.count(),
            wamids=Message.objects.values("wamid").distinct().count(),
        )
    finally:
        stop(worker)


def _baseline_cloud_run(args, *, count: int, base_url: str, log_path: Path, tree):
    """The same run for the code before the governor, from its own tree on a
    database its own migrations made (its schema is older than this code's):
    bookings and the dispatch through its ``manage.py``, figures read by SQL."""
    from django.conf import settings
    from django.utils import timezone

    from bench.harness import drop_database, recreate_database
    from bench.reminders_cloud import (
        BASELINE_DISPATCH,
        BASELINE_SETUP,
        baseline_counts,
        baseline_manage,
        cloud_env,
        sends_report,
    )
    from tests.graph_api import GraphApiClient

    params = settings.DATABASES["default"]
    name = f"{params['NAME']}_baseline"
    host, port = params["HOST"] or "127.0.0.1", params["PORT"] or 5432
    server = f"postgres://{params['USER']}@{host}:{port}"
    recreate_database(f"{server}/postgres", name)
    db_url = f"{server}/{name}"
    baseline_manage(tree, db_url, "migrate", "--no-input", "-v0")
    reset_state()
    graph = GraphApiClient(base_url)
    graph.reset()
    log_path.write_bytes(b"")
    worker = start_worker(
        args.concurrency,
        log_path,
        env_extra={**cloud_env(base_url), "DATABASE_URL": db_url},
        cwd=tree,
    )
    try:
        due_at = timezone.now() + timedelta(seconds=args.lead_in + 30)
        baseline_manage(
            tree,
            db_url,
            "shell",
            "-c",
            BASELINE_SETUP.format(count=count, due_at=due_at.isoformat()),
        )
        wait_for(
            lambda: " ready." in log_path.read_text(errors="replace"),
            timeout=60,
            what="the baseline worker",
        )
        time.sleep(max((due_at - timezone.now()).total_seconds(), 0))
        cpu_before = cpu_now(worker, name)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        baseline_manage(tree, db_url, "shell", "-c", BASELINE_DISPATCH)

        def done():
            statuses = baseline_counts(db_url)["statuses"]
            return statuses.get("pending", 0) + statuses.get("queued", 0) == 0

        wait_for(done, timeout=3600, what="every baseline reminder sent", interval=0.5)
        wall = time.monotonic() - started
        cpu = cpu_now(worker, name) - cpu_before
        counts = baseline_counts(db_url)
        return _cloud_figures(
            wall=wall,
            cpu=cpu,
            count=count,
            due_at=due_at,
            last_sent=counts["last_sent"],
            load_before=load_before,
            sends=sends_report(graph, "900000000000000", count),
            sent=counts["statuses"].get("sent", 0),
            failed=counts["statuses"].get("failed", 0),
            messages=counts["messages"],
            wamids=counts["wamids"],
        )
    finally:
        stop(worker)
        drop_database(f"{server}/postgres", name)


def _cloud_print(name: str, count: int, run: dict, limit: int) -> None:
    print(
        f"{name}: {count} reminders, load {run['load'][0]:.2f} -> {run['load'][1]:.2f}"
    )
    print(
        f"  sustained {run['sustained']:.1f}/s of the {limit}/s limit "
        f"({run['sustained'] / limit:.0%}), slowest full second "
        f"{run['min_second']}, busiest one-second window {run['max_window']}"
    )
    if run["due_to_last"] is not None:
        print(
            f"  due -> last sent: {run['due_to_last']:.1f}s (wall {run['wall']:.1f}s)"
        )
    print(
        f"  sent {run['sent']}, failed {run['failed']}; Meta accepted "
        f"{run['accepted']} for {run['distinct']} customers; messages "
        f"{run['messages']}, distinct wamids {run['wamids']}; Meta refused "
        f"{run['refused'] or 'none'}"
    )
    print(
        "  CPU per send (worker processes + their PostgreSQL backends): "
        f"{run['cpu_per_send'] * 1000:.2f} ms"
    )


def main_cloud(args) -> None:
    import django

    ensure_database()
    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from bench.reminders_cloud import BASELINE_REF, baseline_tree, standin_start

    call_command("migrate", verbosity=0)
    (ROOT / "var").mkdir(exist_ok=True)
    limit = settings.WHATSAPP_THROUGHPUT_PER_SECOND
    print(
        f"bench: cloud_api against the stand-in (latency {args.latency}s, "
        f"{limit}/s per number), worker -c {args.concurrency}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    standin, base_url = standin_start(args.latency, ROOT / "var" / "bench-standin.log")
    try:
        governed = _cloud_run(
            args,
            count=args.count,
            base_url=base_url,
            log_path=ROOT / "var" / "bench-reminders-worker.log",
            cwd=ROOT,
        )
        baseline = None
        if not args.skip_baseline:
            ref = args.baseline_ref or BASELINE_REF
            baseline = _baseline_cloud_run(
                args,
                count=args.baseline_count,
                base_url=base_url,
                log_path=ROOT / "var" / "bench-reminders-baseline.log",
                tree=baseline_tree(ref),
            )
    finally:
        stop(standin)
    print()
    _cloud_print("governor", args.count, governed, limit)
    if args.timeline:
        print("  accepted per second:", " ".join(map(str, governed["per_second"])))
    if baseline:
        _cloud_print(f"current code ({ref})", args.baseline_count, baseline, limit)
        print(
            "CPU per send, governor / current code: "
            f"{governed['cpu_per_send'] / baseline['cpu_per_send']:.2f}x"
        )
    count = args.count
    ok = (
        governed["sent"] == governed["accepted"] == governed["distinct"] == count
        and governed["messages"] == governed["wamids"] == count
        and governed["failed"] == 0
        and governed["max_window"] <= limit
    )
    print("result:", "OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
