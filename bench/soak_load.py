"""The soak's open-loop mixed load, and what it saw (bench/soak.py).

Requests go to the web processes in turn (one in the single-machine mode);
a connection a web process refuses goes to the next one, as a balancer's
passive health check does (nothing was sent, so it is safe for a POST too).
With ``retry_webhooks`` (the scale-out mode) a webhook answered 5xx or not at
all is sent again until answered, as Meta does: every attempt is a sample
(so the failures are counted and checked against the fault windows) and the
answered one's latency runs from the first attempt's scheduled time.
"""

import asyncio
import itertools
import json
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from bench.harness import (
    Connections,
    http_request,
    status_body,
    webhook_body,
    webhook_request,
)

TENANTS = 4
PASSWORD = "soak-password-0123"
PHONE_ID = "soak-phone-{}"
#: How long a webhook is retried, and the pause between attempts.
RETRY_FOR = 300.0
RETRY_PAUSE = 0.5


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
    retried: Counter = field(default_factory=Counter)  # endpoint -> attempts again


class Balancer:
    """Round robin over the web processes' ports."""

    def __init__(self, ports: list[int]):
        self.pools = [Connections(port) for port in ports]
        self.turn = itertools.count()

    async def request(self, raw: bytes) -> int:
        first = next(self.turn)
        for step in range(len(self.pools)):
            pool = self.pools[(first + step) % len(self.pools)]
            try:
                return await pool.request(raw)
            except ConnectionRefusedError:
                if step == len(self.pools) - 1:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for pool in self.pools:
            pool.close()


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
    make,  # (index) -> (endpoint, raw request, on_ok callback, retry) or None
    load: Load,
    connections: Balancer,
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


async def one(due, endpoint, raw, on_ok, retry, load: Load, connections) -> None:
    attempt_at = due
    while True:
        try:
            status = await asyncio.wait_for(connections.request(raw), timeout=30)
            error = ""
        except Exception as exc:
            status, error = 0, type(exc).__name__
        answered = 200 <= status < 300
        since = due if answered else attempt_at
        load.samples.append(
            Sample(endpoint, attempt_at, time.monotonic() - since, status, error)
        )
        if answered and on_ok is not None:
            on_ok()
        failed = status == 0 or status >= 500
        if not (retry and failed) or time.monotonic() > due + RETRY_FOR:
            return
        load.retried[endpoint] += 1
        await asyncio.sleep(RETRY_PAUSE)
        attempt_at = time.monotonic()


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


async def run_load(
    args,
    ports: list[int],
    salons: list[str],
    tokens: list[str],
    load: Load,
    until: float,
    retry_webhooks: bool = False,
):
    port = ports[0]  # the Host header; any web process answers it
    connections = Balancer(ports)
    tasks: set = set()
    tenants = len(salons)

    def message(i):
        wamid = f"wamid.soak.in.{i:07d}"
        body = webhook_body(wamid, i % 300, PHONE_ID.format(i % tenants))
        return (
            "POST /webhooks/whatsapp/ (message)",
            webhook_request(port, body),
            lambda: load.acked_messages.add(wamid),
            retry_webhooks,
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
            retry_webhooks,
        )

    def auth(i):
        return {"Authorization": f"Bearer {tokens[i % tenants]}"}

    reads = ["/api/bookings/", "/api/conversations/", "/api/bookings/?status=pending"]

    def rest_read(i):
        path = reads[i % len(reads)]
        request = http_request(port, "GET", path, headers=auth(i))
        return (f"GET {path}", request, None, False)

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
            False,  # not idempotent: a client would not blindly send it again
        )

    def dashboard(i):
        path = "/api/dashboard/stats/"
        request = http_request(port, "GET", path, headers=auth(i))
        return (f"GET {path}", request, None, False)

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


async def send_statuses(ports: list[int], load: Load, retry: bool = False) -> None:
    """Report "read" for outbound messages not acknowledged yet."""
    connections = Balancer(ports)
    for wamid, wa_id, phone_id in list(load.outbound):
        if wamid in load.acked_statuses:
            continue
        raw = webhook_request(ports[0], status_body(wamid, wa_id, "read", phone_id))

        def ok(w=wamid):
            load.acked_statuses.add(w)

        await one(
            time.monotonic(),
            "POST /webhooks/whatsapp/ (status)",
            raw,
            ok,
            retry,
            load,
            connections,
        )
    connections.close()
