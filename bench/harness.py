"""Shared pieces of the benches that run the whole product.

- ``Product``: the Procfile's processes (all but Flower), each in its own
  process group, with logs, readiness, CPU and RSS readings, and a supervisor's
  restart of one entry;
- ``Connections`` / ``offer``: an open-loop HTTP/1.1 load generator on raw
  keep-alive sockets (latency counts from each request's scheduled time);
- signed WhatsApp webhook requests and bodies;
- database helpers (drop and re-create, manage.py).
"""

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
import threading
import time
from pathlib import Path

import psycopg

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


def product_env(db_url: str, web_port: int, **extra: str) -> dict[str, str]:
    """Production-like settings (DEBUG off) with throwaway secrets."""
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "DEBUG": "false",
        "SECRET_KEY": "bench-secret-key-0123456789-not-for-production",
        "JWT_SIGNING_KEY": "bench-jwt-key-9876543210-not-for-production",
        "WHATSAPP_APP_SECRET": SECRET,
        "WHATSAPP_VERIFY_TOKEN": "bench",
        "WHATSAPP_BACKEND": "console",
        "EMAIL_URL": "smtp://127.0.0.1:2525",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
        "WEB_PORT": str(web_port),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


# --- the product's processes --------------------------------------------------


def _group_stats(pgid: int) -> tuple[int, int, int]:
    """(processes, CPU ticks, RSS bytes) of every live process in a group."""
    page = os.sysconf("SC_PAGE_SIZE")
    count = ticks = rss = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5: pgrp
            count += 1
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            rss += int(fields[21]) * page  # field 24: rss in pages
    return count, ticks, rss


def command_cpu_seconds(command: str) -> float:
    """User+system CPU of every live process whose name is ``command``
    (PostgreSQL's backends, redis-server), from /proc."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[1] == command:
            fields = tail.split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This process's CPU: the load generator's cost."""
    return time.process_time()


class Product:
    """The Procfile's processes (all but Flower) in their own process groups."""

    def __init__(self, env: dict[str, str], logdir: Path):
        self.env = env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.peak_rss: dict[str, int] = {}
        self.lock = threading.Lock()  # one restart at a time
        self.unexpected_exits: list[dict] = []
        self.entry_env: dict[str, dict[str, str]] = {}  # an entry's own variables

    def procfile(self) -> dict[str, str]:
        entries = {}
        for line in (ROOT / "Procfile").read_text().splitlines():
            match = re.match(r"^([\w-]+):\s*(.+)$", line.strip())
            if match and match.group(1) not in PROCFILE_SKIP:
                entries[match.group(1)] = match.group(2)
        return entries

    def start(self, only: str | None = None) -> None:
        for name, command in self.procfile().items():
            if only is not None and name != only:
                continue
            with open(self.logdir / f"{name}.log", "ab") as log:
                self.procs[name] = subprocess.Popen(
                    ["bash", "-c", f"exec {command}"],
                    cwd=ROOT,
                    env={**self.env, **self.entry_env.get(name, {})},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def workers(self) -> list[str]:
        return [n for n in self.procs if n not in ("web", "beat")]

    def cpu_seconds(self, name: str) -> float:
        """User+system CPU of every live process in that entry's process group
        (gunicorn's workers, a celery worker's pool), from /proc."""
        return _group_stats(self.procs[name].pid)[1] / os.sysconf("SC_CLK_TCK")

    def sample_rss(self) -> dict[str, int]:
        """RSS of each entry's whole process group now; keeps the peaks."""
        now = {}
        for name, proc in self.procs.items():
            now[name] = _group_stats(proc.pid)[2]
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), now[name])
        return now

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, web_port: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            ready = all(" ready." in self.log(n) for n in self.workers())
            try:
                with socket.create_connection(("127.0.0.1", web_port), timeout=1):
                    web = True
            except OSError:
                web = False
            if ready and web:
                return
            time.sleep(0.2)
        raise RuntimeError("the product did not start in time")

    def kill_group(self, name: str) -> subprocess.Popen:
        """SIGKILL an entry's whole process group and reap its leader; the
        caller holds ``self.lock`` (so ``supervise`` does not restart it)."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return proc

    def kill_and_restart(self, name: str, timeout: float = 90) -> float:
        """SIGKILL an entry's whole process group, then start it again as a
        supervisor would; returns seconds until the worker logged ready."""
        with self.lock:
            readies = self.log(name).count(" ready.")
            self.kill_group(name)
            started = time.monotonic()
            self.start(only=name)
        while time.monotonic() - started < timeout:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            if name in ("web", "beat") or self.log(name).count(" ready.") > readies:
                return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not come back in time")

    def supervise(self) -> list[str]:
        """Start again any entry that exited by itself (as a supervisor such as
        compose's ``restart: unless-stopped`` does); returns their names."""
        restarted = []
        with self.lock:
            for name, proc in list(self.procs.items()):
                if proc.poll() is None:
                    continue
                tail = self.log(name)[-20000:]
                reason = next(
                    (
                        line
                        for line in reversed(tail.splitlines())
                        if "Unrecoverable error" in line or "CRITICAL" in line
                    ),
                    "",
                )
                self.unexpected_exits.append(
                    {"process": name, "returncode": proc.returncode, "reason": reason}
                )
                self.start(only=name)
                restarted.append(name)
        return restarted

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
        except BaseException:
            writer.close()
            raise
        if keep_alive:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_request(port: int, body: bytes) -> bytes:
    return http_request(
        port,
        "POST",
        "/webhooks/whatsapp/",
        body,
        {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)},
    )


def healthz_request(port: int) -> bytes:
    return http_request(port, "GET", "/healthz")


def _webhook_envelope(phone_number_id: str, value: dict) -> bytes:
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
                                    "phone_number_id": phone_number_id,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()


def webhook_body(
    wamid: str, customer: int, phone_number_id: str = PHONE_NUMBER_ID
) -> bytes:
    """One inbound text message from customer ``customer``."""
    wa_id = f"1650555{customer:04d}"
    return _webhook_envelope(
        phone_number_id,
        {
            "contacts": [{"profile": {"name": f"C{customer}"}, "wa_id": wa_id}],
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
    )


def status_body(wamid: str, recipient: str, status: str, phone_number_id: str) -> bytes:
    """One status (sent, delivered, read) of an outbound message."""
    return _webhook_envelope(
        phone_number_id,
        {
            "statuses": [
                {
                    "id": wamid,
                    "status": status,
                    "timestamp": str(int(time.time())),
                    "recipient_id": recipient,
                }
            ]
        },
    )


async def offer(port: int, requests: list[bytes], rate: float) -> dict:
    """Send requests[i] at start + i/rate, whatever happened to the others."""
    connections = Connections(port)
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []  # (due, seconds from the start; latency)
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
            timeline.append((due - start, latencies[-1]))
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
    connections.close()
    return {
        "offered": len(requests),
        "ok": len(acked),
        "acked": acked,
        "errors": errors,
        "achieved_rate": len(acked) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "timeline": timeline,
    }


def timeline_rows(timeline: list[tuple[float, float]]) -> list[str]:
    """Ack latency second by second: where a tail comes from."""
    by_second: dict[int, list[float]] = {}
    for due, latency in timeline:
        by_second.setdefault(int(due), []).append(latency)
    return [
        f"  s{second:>3}: n={len(values):>4} p50={percentile(values, 50) * 1e3:7.1f} "
        f"p99={percentile(values, 99) * 1e3:7.1f} max={max(values) * 1e3:7.1f} ms"
        for second, values in sorted(by_second.items())
    ]


# --- database -----------------------------------------------------------------


def recreate_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(env: dict[str, str], *args: str, quiet: bool = False) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    if not quiet and result.stdout:
        print(result.stdout, end="")
    return result.stdout


def exit_once_on_sigterm() -> None:
    """SIGTERM ends the bench through its clean-up (its finally blocks), once:
    a second one during the clean-up (``timeout`` passes one on) would abort
    it and leave the product's processes running."""

    def terminate(*_) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(143)

    signal.signal(signal.SIGTERM, terminate)
