"""SIGKILL the Redis primary under load; Sentinel promotes the replica.

A primary, a replica and three sentinels started here; the product scaled
out (two web processes taking requests in turn, two supervised workers per
queue for webhooks, reminders and e-mail, two beats) reaches them only
through REDIS_SENTINELS / REDIS_SENTINEL_MASTER (cache and broker share the
group, as in development). A steady load of signed webhooks and
bookings (a confirmation e-mail each, an hour_before reminder due at once)
runs through the kill. Afterwards: every webhook acknowledged (a 503 or a
refused connection retried as Meta would) and stored once, every e-mail sent
once, every reminder sent once, jobs completed on the new primary by the same
worker processes, the cache serving hits again. What the replica never
received is re-driven from the database by beat (short re-drive settings).
"""

import importlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from django.apps import apps
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks
from rest_framework_simplejwt.tokens import RefreshToken

from bookings.models import Booking, BookingReminder
from messaging.models import Message, WebhookEvent
from notifications.models import EmailLog
from queues.definitions import EMAIL, REMINDER, WEBHOOK
from tests.factories import TemplateFactory, UserFactory
from tests.messaging.conftest import sign, text_body
from tests.processes import (
    ManagedProcess,
    celery_beat_args,
    celery_worker_args,
    first_completion_after,
    free_port,
    sentinel_group,
)
from tests.utils import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MASTER = "salon"
CONSOLE_SEND = "WhatsApp template from"
LOAD_BEFORE_KILL = 6.0
LOAD_AFTER_KILL = 14.0
WEBHOOK_EVERY = 0.1
BOOKING_EVERY = 0.5
REDRIVE_SECONDS = "3"
QUEUES_WORKED = (WEBHOOK.name, REMINDER.name, EMAIL.name)


@pytest.fixture
def processes():
    started: list[ManagedProcess] = []

    def start(process: ManagedProcess) -> ManagedProcess:
        started.append(process.start())
        return process

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture
def replication_group(tmp_path):
    """Primary, replica and three sentinels, stopped at teardown."""
    group = sentinel_group(master=MASTER, log_dir=tmp_path)
    yield group
    group.stop()


#: The migrations that provision beat's every-minute tasks.
SCHEDULE_MIGRATIONS = (
    "bookings.migrations.0003_reminder_dispatch_schedule",
    "notifications.migrations.0003_email_redrive_schedule",
    "messaging.migrations.0003_webhook_redrive_schedule",
    "messaging.migrations.0004_message_outbound_redrive",
    "messaging.migrations.0005_i12_customer_bsuid_and_media",
)


def every_few_seconds(seconds: int) -> None:
    """Beat's every-minute tasks tick every few seconds for this test. They are
    provisioned again first: a transactional test run before this one empties
    the tables the migrations filled."""
    for module in SCHEDULE_MIGRATIONS:
        importlib.import_module(module).provision(apps, None)
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=seconds, period="seconds"
    )
    PeriodicTask.objects.filter(interval__period="minutes").update(interval=interval)
    PeriodicTasks.update_changed()


class Load:
    """Webhooks and bookings at a steady rate until stopped; 503s and refused
    connections retried until answered, as Meta and a client would."""

    def __init__(self, clients: list[httpx.Client], salon_id: str, token: str):
        self.clients, self.salon_id, self.token = clients, salon_id, token
        self.sent = 0
        self.acked: list[str] = []
        self.bookings: list[str] = []
        self.retried: dict[str, int] = {}
        self.stop = threading.Event()
        self.failures: list[str] = []

    def _until_answered(self, what: str, send) -> httpx.Response:
        """``send(client)`` on the web processes in turn (a balancer's round robin)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.sent += 1
            try:
                response = send(self.clients[self.sent % len(self.clients)])
            except httpx.TransportError as exc:
                kind = type(exc).__name__
                self.retried[kind] = self.retried.get(kind, 0) + 1
            else:
                if response.status_code != 503:
                    return response
                self.retried["503"] = self.retried.get("503", 0) + 1
            time.sleep(0.2)
        raise AssertionError(f"{what} never answered")

    def webhook(self, n: int) -> None:
        wamid = f"wamid.FAILOVER{n:05d}"
        raw = json.dumps(text_body(wamid, wa_id=f"1650555{n % 30:04d}")).encode()
        response = self._until_answered(
            wamid,
            lambda http: http.post(
                "/webhooks/whatsapp/",
                content=raw,
                headers={
                    "X-Hub-Signature-256": sign(raw),
                    "Content-Type": "application/json",
                },
            ),
        )
        if response.status_code != 200:
            self.failures.append(f"{wamid}: {response.status_code}")
        self.acked.append(wamid)

    def booking(self, n: int) -> None:
        email = f"failover{n}@example.com"
        data = {
            "salon": self.salon_id,
            "customer_name": f"Customer {n}",
            "customer_phone": f"+3461{n:07d}",
            "customer_email": email,
            "service_name": "Haircut",
            # hour_before is due at once
            "start_at": (timezone.now() + timedelta(minutes=50)).isoformat(),
        }
        response = self._until_answered(
            email,
            lambda http: http.post(
                "/api/bookings/",
                json=data,
                headers={"Authorization": f"Bearer {self.token}"},
            ),
        )
        if response.status_code != 201:
            self.failures.append(f"{email}: {response.status_code} {response.text}")
            return
        self.bookings.append(email)

    def run(self) -> None:
        start, n, next_booking = time.monotonic(), 0, 0.0
        while not self.stop.is_set():
            self.webhook(n)
            elapsed = time.monotonic() - start
            if elapsed >= next_booking:
                self.booking(len(self.bookings) + len(self.failures))
                next_booking += BOOKING_EVERY
            n += 1
            self.stop.wait(WEBHOOK_EVERY)


class Outstanding(dict):
    """What is not done yet; true once nothing is (its repr says what is)."""

    def __bool__(self) -> bool:
        return all(value <= 0 for key, value in self.items() if key != "statuses")


def salon_hits(http: httpx.Client) -> int:
    text = http.get("/metrics").text
    return sum(
        int(float(value))
        for value in re.findall(
            r'^cache_hits_total\{namespace="salon",pid="\d+"\} (\S+)$', text, re.M
        )
    )


def test_a_primary_killed_under_load_costs_seconds_and_nothing_else(
    salon, subprocess_env, replication_group, processes, smtp_server, tmp_path
):
    primary, replica = replication_group.primary, replication_group.replica
    owner = UserFactory()
    salon.owner = owner
    salon.save()
    TemplateFactory(salon=salon, name="booking_reminder")
    every_few_seconds(2)
    cache_db, queue_db = int(os.environ["REDIS_DB"]), int(os.environ["REDIS_QUEUE_DB"])
    env = {
        **subprocess_env,
        "REDIS_SENTINELS": replication_group.sentinels_setting(),
        "REDIS_SENTINEL_MASTER": MASTER,
        # Nothing may reach the Redis the rest of the suite uses.
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "1",
        "EMAIL_URL": smtp_server.url,
        "WHATSAPP_WEBHOOK_REDRIVE_AFTER_SECONDS": REDRIVE_SECONDS,
        "WHATSAPP_OUTBOUND_REDRIVE_AFTER_SECONDS": REDRIVE_SECONDS,
        "EMAIL_REDRIVE_AFTER_SECONDS": REDRIVE_SECONDS,
        "REMINDER_REQUEUE_AFTER_SECONDS": REDRIVE_SECONDS,
        "BEAT_LEASE_SECONDS": "3",
        "METRICS_CACHE_SECONDS": "0",
        "CELERY_VISIBILITY_TIMEOUT": "30",
    }
    webs = [
        processes(
            ManagedProcess(
                name=f"web{n}",
                args=[
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "saas.wsgi",
                    "--bind",
                    f"127.0.0.1:{free_port()}",
                    "--workers",
                    "1",
                    "--threads",
                    "4",
                ],
                env=env,
                log_path=tmp_path / f"web{n}.log",
            )
        )
        for n in range(2)
    ]
    workers = {
        f"{alias}-{n}": processes(
            ManagedProcess(
                name=f"{alias}-{n}",
                args=[
                    "scripts/supervise.sh",
                    *celery_worker_args(
                        [spec.name], name=f"{alias}-{n}", concurrency=2, pool="threads"
                    ),
                ],
                env=env,
                log_path=tmp_path / f"{alias}-{n}.log",
            )
        )
        for alias, spec in (
            ("webhook", WEBHOOK),
            ("reminder", REMINDER),
            ("email", EMAIL),
        )
        for n in range(2)
    }
    beats = [
        processes(
            ManagedProcess(
                name=f"beat{n}",
                args=celery_beat_args(),
                env=env,
                log_path=tmp_path / f"beat{n}.log",
            )
        )
        for n in range(2)
    ]
    clients = [
        httpx.Client(
            base_url=f"http://{web.args[web.args.index('--bind') + 1]}", timeout=10
        )
        for web in webs
    ]

    def web_up(web: ManagedProcess, http: httpx.Client) -> bool:
        assert web.alive, web.log()[-3000:]
        try:
            return http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    for web, http in zip(webs, clients, strict=True):
        wait_until(lambda w=web, h=http: web_up(w, h), timeout=90, message=web.name)
    for worker in workers.values():
        wait_until(
            lambda w=worker: " ready." in w.log(), timeout=90, message=worker.name
        )
    pids = {alias: w.proc.pid for alias, w in workers.items()}

    token = str(RefreshToken.for_user(owner).access_token)
    load = Load(clients, str(salon.pk), token)
    runner = threading.Thread(target=load.run, daemon=True)
    runner.start()
    time.sleep(LOAD_BEFORE_KILL)  # load time before the fault, not a wait for a state
    assert load.acked, "no load before the kill"

    killed_at = time.time()
    primary.kill(signal.SIGKILL)
    wait_until(
        replication_group.replica_promoted,
        timeout=60,
        message="Sentinel promoted the replica",
    )
    promoted_at = time.time()
    new_primary = replica.client(db=queue_db)
    wait_until(
        lambda: (
            first_completion_after(new_primary, killed_at, QUEUES_WORKED) is not None
        ),
        timeout=120,
        message="a job completed on the new primary",
    )
    first_job_at = first_completion_after(new_primary, killed_at, QUEUES_WORKED)
    time.sleep(max(0.0, LOAD_AFTER_KILL - (time.time() - killed_at)))
    load.stop.set()
    stopped_at = time.time()
    runner.join(timeout=150)
    assert not runner.is_alive()
    assert not load.failures, load.failures

    # Everything acknowledged ends up done, once.
    def drained() -> Outstanding:
        reminders = BookingReminder.objects.filter(kind="hour_before")
        return Outstanding(
            webhook_events=WebhookEvent.objects.exclude(status="processed").count(),
            webhooks_unstored=len(load.acked)
            - Message.objects.filter(direction="in").count(),
            emails_unsent=len(load.bookings)
            - EmailLog.objects.filter(status="sent").count(),
            emails_unreceived=len(load.bookings) - len(smtp_server.received),
            reminders_unsent=len(load.bookings)
            - reminders.filter(status="sent").count(),
            statuses={
                "events": dict(
                    Counter(WebhookEvent.objects.values_list("status", flat=True))
                ),
                "emails": dict(
                    Counter(EmailLog.objects.values_list("status", flat=True))
                ),
                "reminders": dict(Counter(reminders.values_list("status", flat=True))),
            },
        )

    wait_until(drained, timeout=240, message="everything re-driven and done")
    drained_at = time.time()

    inbound = list(
        Message.objects.filter(direction="in").values_list("wamid", flat=True)
    )
    assert sorted(inbound) == sorted(load.acked)  # each stored once
    assert WebhookEvent.objects.count() == len(load.acked)
    assert Booking.objects.count() == len(load.bookings)
    mailed = sorted(
        address for mail in smtp_server.received for address in mail.rcpt_tos
    )
    assert mailed == sorted(load.bookings)  # each confirmation sent once
    reminders = BookingReminder.objects.filter(kind="hour_before")
    assert set(reminders.values_list("status", flat=True)) == {"sent"}
    reminder_messages = Message.objects.filter(direction="out")
    assert reminder_messages.count() == len(load.bookings)
    assert reminder_messages.values("wamid").distinct().count() == len(load.bookings)
    sends = sum(workers[f"reminder-{n}"].log().count(CONSOLE_SEND) for n in range(2))
    assert sends == len(load.bookings)
    jobs_done = {name: w.log().count("] succeeded in") for name, w in workers.items()}

    # The same supervised worker processes, never restarted by hand.
    assert {alias: w.proc.pid for alias, w in workers.items()} == pids
    assert all(w.alive for w in workers.values())

    # The cache serves hits again, on the new primary.
    http = clients[0]

    def salon_cached_and_hit() -> bool:
        before = salon_hits(http)
        for _ in range(2):
            http.get(
                f"/api/salons/{salon.pk}/", headers={"Authorization": f"Bearer {token}"}
            )
        return (
            replica.client(db=cache_db).exists(f"salon:{salon.pk}") == 1
            and salon_hits(http) > before
        )

    wait_until(salon_cached_and_hit, timeout=30, message="cache hits again")

    leaders = [b.name for b in beats if "holds the lease: sending" in b.log()]
    restarts = {alias: w.log().count("supervise: ") for alias, w in workers.items()}
    print(
        f"\nFAILOVER kill->promoted {promoted_at - killed_at:.1f}s, "
        f"kill->first job on new primary {first_job_at - killed_at:.1f}s, "
        f"load stopped->all done {drained_at - stopped_at:.1f}s; "
        f"webhooks {len(load.acked)}, bookings {len(load.bookings)}, "
        f"retried {load.retried}, worker restarts by supervision {restarts}, "
        f"beats that led {leaders}, jobs per worker {jobs_done}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
