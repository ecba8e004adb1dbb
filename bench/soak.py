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

With --scale-out (issue 14; bench/soak_topology.py): a Redis primary, its
replica and three sentinels instead of the two redis-servers, two web
processes (the load goes to them in turn), two supervised workers of each of
the Procfile's worker entries and two beats. Its faults: SIGKILL of one worker
of each entry (supervise.sh starts it again), of one web process (started
again), and of the Redis primary (Sentinel promotes the replica; the old
primary comes back later as a replica). A connection a dead web process
refuses goes to the other one, as a balancer's does. A webhook answered 5xx
or not at all is sent again until answered, as Meta does; REST requests are
not retried (a POST is not idempotent). Every failed attempt is counted, and
may only fall in the failover window (kill to the first job completed on the
new primary, plus --broker-grace) or, unanswered, be in flight on the killed
web process. Also reported: kill to replica promoted and to a job done on
the new primary, worker restarts, the beats' leads and sends per period.

    .venv/bin/python bench/soak.py --scale-out [--duration 300]

It drops and re-creates its database (--db, default salon_soak_bench, or
salon_soak_scaleout with --scale-out) and stops every process it started,
redis-servers included.
"""

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    Product,
    drop_database,
    exit_once_on_sigterm,
    free_port,
    manage,
    product_env,
    recreate_database,
)
from bench.soak_checks import (  # noqa: E402
    CONSOLE_SEND,
    Timeline,
    db_counts,
    drained,
    report,
    summarize,
)
from bench.soak_load import (  # noqa: E402
    PASSWORD,
    PHONE_ID,
    TENANTS,
    Load,
    login,
    outbound_poller,
    poll_outbound,
    run_load,
    send_statuses,
)
from bench.soak_topology import ScaleOut  # noqa: E402
from tests.processes import redis_server  # noqa: E402
from tests.smtp import SMTPServer  # noqa: E402

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


class SingleMachine:
    """The Procfile's processes once, with a broker and a cache redis-server."""

    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.web_ports = [free_port()]
        self.started: list = []
        self.product: Product | None = None

    def start_redis(self) -> dict[str, str]:
        self.broker = redis_server(log_dir=self.workdir, extra=["--appendonly", "yes"])
        self.started.append(self.broker)
        self.cache = redis_server(
            log_dir=self.workdir,
            extra=["--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"],
        )
        self.started.append(self.cache)
        return {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.cache.port),
            "REDIS_DB": "0",
            "REDIS_QUEUE_HOST": "127.0.0.1",
            "REDIS_QUEUE_PORT": str(self.broker.port),
            "REDIS_QUEUE_DB": "0",
        }

    def start(self, env: dict[str, str]) -> None:
        self.product = Product(env, self.workdir)
        self.product.start()
        self.product.wait_ready(self.web_ports[0], timeout=120)

    def console_sends(self, marker: str) -> int:
        return self.product.log("reminder").count(marker)

    def faults(self, timeline) -> None:
        """Runs in a thread during the load, on a schedule scaled to the duration."""
        args, product = self.args, self.product
        broker, cache = self.broker, self.cache
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
                timeline.note(
                    f"broker Redis back after {time.monotonic() - begin:.1f}s"
                )
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

    def finish(self, summary: dict, db_url: str, timeline) -> list[str]:
        return []

    def stop(self) -> None:
        if self.product is not None:
            self.product.stop()
        for thing in reversed(self.started):
            try:
                thing.stop()
            except Exception:
                traceback.print_exc()


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
    parser.add_argument(
        "--db", help="default salon_soak_bench (salon_soak_scaleout with --scale-out)"
    )
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", help="also write the summary to this file")
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="Sentinel group, two webs, two workers per entry, two beats (issue 14)",
    )
    args = parser.parse_args(argv)
    if args.db is None:
        args.db = "salon_soak_scaleout" if args.scale_out else "salon_soak_bench"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    db_url = f"{args.pg}/{args.db}"
    topology = (ScaleOut if args.scale_out else SingleMachine)(args, workdir)
    ports = topology.web_ports
    smtp = None
    stop_polling = threading.Event()
    stop_rss = threading.Event()
    summary, extra = None, []
    try:
        redis_env = topology.start_redis()
        smtp = SMTPServer().start()
        env = product_env(
            db_url,
            ports[0],
            **redis_env,
            EMAIL_URL=smtp.url,
            # A killed worker's unacknowledged jobs come back after this.
            CELERY_VISIBILITY_TIMEOUT=str(args.visibility_timeout),
            CELERY_TASK_SOFT_TIME_LIMIT="20",
            CELERY_TASK_TIME_LIMIT="25",
            WHATSAPP_WEBHOOK_REDRIVE_AFTER_SECONDS="15",
            EMAIL_REDRIVE_AFTER_SECONDS="15",
            # A job lost by a worker killed as it took it is published again.
            QUEUE_LOST_JOB_AFTER_SECONDS="15",
            QUEUE_LOST_JOB_CONFIRM_SECONDS="10",
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
        topology.start({**env, "LOG_LEVEL": "INFO"})
        product = topology.product
        tokens = [login(ports[0], f"soak{n}") for n in range(TENANTS)]
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
                topology.faults(timeline)
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
        asyncio.run(run_load(args, ports, salons, tokens, load, until, args.scale_out))
        injector.join(timeout=240)
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
            asyncio.run(send_statuses(ports, load, args.scale_out))
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
        sends = topology.console_sends(CONSOLE_SEND)
        summary = summarize(args, load, timeline, counts, smtp, product, sends, drain_s)
        extra = topology.finish(summary, db_url, timeline)
    finally:
        stop_polling.set()
        stop_rss.set()
        topology.stop()
        if smtp is not None:
            try:
                smtp.stop()
            except Exception:
                traceback.print_exc()
        if not args.keep_db:
            try:
                drop_database(f"{args.pg}/postgres", args.db)
            except psycopg.Error:
                traceback.print_exc()
    report(summary, extra)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    print(f"(logs in {workdir})")
    if summary["ok"] and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    exit_once_on_sigterm()
    sys.exit(main())
