"""Webhook ingestion under open-loop load, with the workers draining meanwhile.

Starts the product the way `make run` does (the Procfile's web, workers and
beat, on PostgreSQL), then for each rate offers signed webhooks at that fixed
rate for a fixed time (open loop: requests leave on schedule whether or not
earlier ones were answered; latency counts from the scheduled time), and the
same rate of GET /healthz as the floor. Reports, per rate: achieved rate,
errors, ack latency p50/p99, end-to-end latency p50/p95 (receipt to stored
Message), backlog drain time, lost and duplicated messages, and the ratio of
the webhook's ack p99 to /healthz's.

    .venv/bin/python bench/webhook_ingest.py [--rates 100,300,600] [--duration 10]

It uses a database and Redis DBs of its own (salon_bench_wa, REDIS_DB=2,
REDIS_QUEUE_DB=3 by default), drops and re-creates the database, flushes those
two Redis DBs, and stops every process it started.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-app-secret"
PHONE_NUMBER_ID = "106540352242922"
PROCFILE_SKIP = {"flower"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# --- the product's processes --------------------------------------------------


class Product:
    """The Procfile's processes (all but Flower) in their own process groups."""

    def __init__(self, env: dict[str, str], logdir: Path):
        self.env = env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}

    def procfile(self) -> dict[str, str]:
        entries = {}
        for line in (ROOT / "Procfile").read_text().splitlines():
            match = re.match(r"^([\w-]+):\s*(.+)$", line.strip())
            if match and match.group(1) not in PROCFILE_SKIP:
                entries[match.group(1)] = match.group(2)
        return entries

    def start(self) -> None:
        for name, command in self.procfile().items():
            log = open(self.logdir / f"{name}.log", "wb")
            self.procs[name] = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def cpu_seconds(self, name: str) -> float:
        """User+system CPU of every live process in that entry's process group
        (gunicorn's workers, a celery worker's pool), from /proc."""
        pgid = self.procs[name].pid
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # field 5: pgrp
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, web_port: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        workers = [n for n in self.procs if n not in ("web", "beat")]
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            ready = all(" ready." in self.log(n) for n in workers)
            try:
                with socket.create_connection(("127.0.0.1", web_port), timeout=1):
                    web = True
            except OSError:
                web = False
            if ready and web:
                return
            time.sleep(0.2)
        raise RuntimeError("the product did not start in time")

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()


# --- an open-loop HTTP/1.1 load generator -------------------------------------


class Connections:
    def __init__(self, port: int):
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, raw: bytes) -> int:
        while self.idle:
            # A kept-alive connection the server has closed fails before any
            # byte comes back: retry on the next one (as real clients do).
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, raw)
            except (ConnectionError, asyncio.IncompleteReadError):
                continue
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return await self._exchange(reader, writer, raw)

    async def _exchange(self, reader, writer, raw: bytes) -> int:
        try:
            writer.write(raw)
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            length, keep_alive = 0, True
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                key, _, value = line.decode("latin-1").partition(":")
                key = key.strip().lower()
                if key == "content-length":
                    length = int(value.strip())
                elif key == "connection" and value.strip().lower() == "close":
                    keep_alive = False
            if length:
                await reader.readexactly(length)
        except Exception:
            writer.close()
            raise
        if keep_alive:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status


def webhook_request(port: int, body: bytes) -> bytes:
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    head = (
        f"POST /webhooks/whatsapp/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Hub-Signature-256: {signature}\r\n\r\n"
    )
    return head.encode() + body


def healthz_request(port: int) -> bytes:
    return f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def webhook_body(wamid: str, customer: int) -> bytes:
    wa_id = f"1650555{customer:04d}"
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": PHONE_NUMBER_ID,
                                },
                                "contacts": [
                                    {
                                        "profile": {"name": f"C{customer}"},
                                        "wa_id": wa_id,
                                    }
                                ],
                                "messages": [
                                    {
                                        "from": wa_id,
                                        "id": wamid,
                                        "timestamp": str(int(time.time())),
                                        "type": "text",
                                        "text": {"body": "Is Saturday 10:00 free?"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()


async def offer(port: int, requests: list[bytes], rate: float) -> dict:
    """Send requests[i] at start + i/rate, whatever happened to the others."""
    connections = Connections(port)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    acked: list[int] = []

    async def one(index: int, raw: bytes, due: float) -> None:
        try:
            status = await asyncio.wait_for(connections.request(raw), timeout=30)
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        if status == 200:
            acked.append(index)
            latencies.append(time.perf_counter() - due)
        else:
            errors[str(status)] = errors.get(str(status), 0) + 1

    loop = asyncio.get_running_loop()
    start = time.perf_counter() + 0.05
    tasks = []
    for i, raw in enumerate(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i, raw, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for _, writer in connections.idle:
        writer.close()
    return {
        "offered": len(requests),
        "ok": len(acked),
        "acked": acked,
        "errors": errors,
        "achieved_rate": len(acked) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


# --- database -----------------------------------------------------------------


def recreate_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


CREATE_SALON = f"""
from django.contrib.auth import get_user_model
from bookings.models import Salon
owner = get_user_model().objects.create_user("bench", "bench@example.com", "x")
Salon.objects.create(
    owner=owner, name="Bench", whatsapp_phone_number_id="{PHONE_NUMBER_ID}"
)
"""


def phase_outcome(db_url: str, prefix: str, acked: set[str]) -> dict:
    """Lost: acknowledged but not stored. Duplicated: stored more than once
    (the unique constraint should make it 0), or an event applied twice."""
    with psycopg.connect(db_url) as conn:
        wamids = [
            row[0]
            for row in conn.execute(
                "SELECT wamid FROM messaging_message WHERE wamid LIKE %s",
                (prefix + "%",),
            )
        ]
        applied_twice = conn.execute(
            "SELECT count(*) FROM messaging_webhookevent "
            "WHERE body LIKE %s AND attempts > 1",
            (f'%"{prefix}%',),
        ).fetchone()[0]
        e2e = [
            row[0]
            for row in conn.execute(
                "SELECT EXTRACT(EPOCH FROM processed_at - received_at) "
                "FROM messaging_webhookevent WHERE body LIKE %s",
                (f'%"{prefix}%',),
            )
        ]
    e2e = [float(v) for v in e2e if v is not None]
    return {
        "stored": len(wamids),
        "lost": len(acked - set(wamids)),
        "duplicated": len(wamids) - len(set(wamids)) + applied_twice,
        "e2e_p50_ms": percentile(e2e, 50) * 1000,
        "e2e_p95_ms": percentile(e2e, 95) * 1000,
    }


def pending(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM messaging_webhookevent WHERE status = 'pending'"
        ).fetchone()[0]


def wait_drained(db_url: str, timeout: float) -> float | None:
    """Seconds from now until no event is pending (None if not within timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pending(db_url) == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


# --- main ---------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,300,600")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--db", default="salon_bench_wa")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-db", default="2")
    parser.add_argument("--redis-queue-db", default="3")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]

    db_url = f"{args.pg}/{args.db}"
    web_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_DB": args.redis_db,
        "REDIS_QUEUE_DB": args.redis_queue_db,
        "DEBUG": "false",
        "SECRET_KEY": "bench-secret-key-0123456789-not-for-production",
        "JWT_SIGNING_KEY": "bench-jwt-key-9876543210-not-for-production",
        "WHATSAPP_APP_SECRET": SECRET,
        "WHATSAPP_VERIFY_TOKEN": "bench",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
        "WEB_PORT": str(web_port),
        "PYTHONUNBUFFERED": "1",
    }
    for db in (args.redis_db, args.redis_queue_db):
        if db in ("0", "1"):
            sys.exit("refusing to flush the development Redis DBs 0/1")
        redis.Redis(db=int(db)).flushdb()
    recreate_database(f"{args.pg}/postgres", args.db)
    manage(env, "migrate", "--no-input", "-v0")
    manage(env, "shell", "-c", CREATE_SALON)

    logdir = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    product = Product({**env, "LOG_LEVEL": "INFO"}, logdir)
    results = []
    try:
        product.start()
        product.wait_ready(web_port)
        # Warm up: connections, imports, the first salon lookup.
        asyncio.run(
            offer(
                web_port,
                [
                    webhook_request(web_port, webhook_body(f"wamid.WARM.{i}", i))
                    for i in range(50)
                ],
                50,
            )
        )
        wait_drained(db_url, args.drain_timeout)
        for rate in rates:
            count = int(rate * args.duration)
            web_cpu = product.cpu_seconds("web")
            floor = asyncio.run(
                offer(web_port, [healthz_request(web_port)] * count, rate)
            )
            floor.pop("acked")
            floor["web_cpu_ms"] = (product.cpu_seconds("web") - web_cpu) / count * 1e3
            web_cpu = product.cpu_seconds("web")
            worker_cpu = product.cpu_seconds("webhook")
            prefix = f"wamid.BENCH.{rate}."
            bodies = [
                webhook_request(web_port, webhook_body(f"{prefix}{i:06d}", i % 500))
                for i in range(count)
            ]
            hooks = asyncio.run(offer(web_port, bodies, rate))
            hooks["web_cpu_ms"] = (product.cpu_seconds("web") - web_cpu) / count * 1e3
            drain = wait_drained(db_url, args.drain_timeout)
            hooks["worker_cpu_ms"] = (
                (product.cpu_seconds("webhook") - worker_cpu) / count * 1e3
            )
            acked = {f"{prefix}{i:06d}" for i in hooks.pop("acked")}
            outcome = phase_outcome(db_url, prefix, acked)
            results.append(
                {
                    "rate": rate,
                    "webhook": hooks,
                    "healthz": floor,
                    "drain_s": drain,
                    **outcome,
                    "p99_ratio": hooks["p99_ms"] / floor["p99_ms"],
                    "load_average": os.getloadavg(),
                }
            )
            print_row(results[-1], header=len(results) == 1)
    finally:
        product.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"(logs in {logdir})")
    return 0


def print_row(r: dict, header: bool) -> None:
    if header:
        print(
            "| offered/s | achieved/s | errors | ack p50 ms | ack p99 ms | "
            "healthz p99 ms | p99 ratio | e2e p50 ms | e2e p95 ms | drain s | "
            "lost | dup | web CPU ms/req (webhook / healthz) | "
            "worker CPU ms/event | load avg |"
        )
        print("|" + "---|" * 15)
    hooks, floor = r["webhook"], r["healthz"]
    drain = "n/a" if r["drain_s"] is None else f"{r['drain_s']:.1f}"
    errors = sum(hooks["errors"].values())
    print(
        f"| {r['rate']} | {hooks['achieved_rate']:.0f} | {errors} | "
        f"{hooks['p50_ms']:.1f} | {hooks['p99_ms']:.1f} | {floor['p99_ms']:.1f} | "
        f"{r['p99_ratio']:.1f} | {r['e2e_p50_ms']:.0f} | {r['e2e_p95_ms']:.0f} | "
        f"{drain} | {r['lost']} | {r['duplicated']} | "
        f"{hooks['web_cpu_ms']:.2f} / {floor['web_cpu_ms']:.2f} | "
        f"{hooks['worker_cpu_ms']:.1f} | {r['load_average'][0]:.1f} |",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
