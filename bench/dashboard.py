"""Dashboard benchmark: uncached vs cached vs the floor, over HTTP through gunicorn.

Builds a busy data set on PostgreSQL in a database of its own (default
``salon_bench_cache``: 100,000 bookings and 1,000,000 messages across 50 salons,
loaded with COPY), starts gunicorn on it, and measures side by side in one run:

- floor: an authenticated DRF view that returns a constant (bench/urls.py);
- cached: GET /api/dashboard/stats/ answered from Redis;
- uncached: the same request after its key was deleted (the real miss path:
  lock, four aggregate queries, store), not timed the deletion;
- a mix of 95% dashboard reads and 5% booking writes, for the hit rate (the
  writes patch the cached dashboard in place: bookings/cache.py).

    .venv/bin/python bench/dashboard.py                 # full size
    .venv/bin/python bench/dashboard.py --scale 0.05    # quick run
    .venv/bin/python bench/dashboard.py --reuse         # keep a built data set

Everything it starts (gunicorn) is stopped on exit.
"""

import argparse
import http.client
import io
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SALONS = 50
BOOKINGS = 100_000
MESSAGES = 1_000_000
MESSAGES_PER_CONVERSATION = 25
ZONES = ["Europe/Madrid", "America/New_York", "UTC", "Asia/Kolkata", "Australia/Sydney"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="data size factor")
    parser.add_argument("--db", default="salon_bench_cache")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-db", type=int, default=6, help="cache DB (flushed)")
    parser.add_argument("--redis-queue-db", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="reuse a built data set")
    parser.add_argument("--rounds", type=int, default=400, help="floor/cached samples")
    parser.add_argument("--uncached", type=int, default=60, help="uncached samples")
    parser.add_argument("--mix-ops", type=int, default=4000, help="95/5 mix requests")
    parser.add_argument("--mix-clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker")
    return parser.parse_args()


def configure_environment(args) -> dict[str, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": f"{args.pg}/{args.db}",
        "REDIS_DB": str(args.redis_db),
        "REDIS_QUEUE_DB": str(args.redis_queue_db),
        "DEBUG": "false",
        "SECRET_KEY": "bench-secret-key-not-for-production-0123456789abcdef",
        "JWT_SIGNING_KEY": "bench-jwt-signing-key-not-for-production-0123456789",
        "WHATSAPP_APP_SECRET": "bench-app-secret",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "JWT_ACCESS_TOKEN_MINUTES": "240",
        "WHATSAPP_BACKEND": "console",
        # Production settings refuse to start without SMTP; nothing is sent.
        "EMAIL_URL": os.environ.get("EMAIL_URL", "smtp://127.0.0.1:2525"),
    }
    os.environ.update(env)
    return {**os.environ, **env}


# --- data ----------------------------------------------------------------------
def progress(label: str, done: int, total: int, started: float) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    rate = done / max(time.monotonic() - started, 1e-9)
    sys.stderr.write(
        f"\r  {label:<14} [{'#' * filled}{'.' * (width - filled)}] "
        f"{done:>9,}/{total:,} {rate:>9,.0f}/s"
    )
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def copy_rows(cursor, table: str, columns: list[str], rows, total: int) -> None:
    """COPY ``rows`` (tuples of already-formatted text fields) in chunks."""
    started = time.monotonic()
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    done = 0
    with cursor.copy(sql) as copy:
        buffer = io.StringIO()
        for row in rows:
            buffer.write("\t".join(row))
            buffer.write("\n")
            done += 1
            if done % 50_000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
                progress(table.split("_", 1)[1], done, total, started)
        copy.write(buffer.getvalue())
    progress(table.split("_", 1)[1], done, total, started)


def recreate_database(args) -> None:
    import psycopg

    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db}"')


def database_ready(args, expected_messages: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"{args.pg}/{args.db}") as conn:
            row = conn.execute("SELECT count(*) FROM messaging_message").fetchone()
            return row[0] >= expected_messages
    except psycopg.Error:
        return False


def build_data(args) -> None:
    """Users and salons through the ORM; bookings, conversations, messages by COPY."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from bookings.models import Salon

    call_command("migrate", verbosity=0)
    users = get_user_model()
    owner = users.objects.create_user("bench_owner", "owner@example.com", "x")
    users.objects.create_user("bench_staff", "staff@example.com", "x", is_staff=True)
    salons = Salon.objects.bulk_create(
        Salon(
            owner=owner,
            name=f"Bench salon {i:02d}",
            whatsapp_phone_number_id=f"{900000000000000 + i}",
            timezone=ZONES[i % len(ZONES)],
        )
        for i in range(SALONS)
    )
    salon_ids = [str(s.pk) for s in salons]
    rng = random.Random(42)
    now = datetime.now(UTC)
    n_bookings = max(int(BOOKINGS * args.scale), SALONS)
    n_messages = max(int(MESSAGES * args.scale), SALONS)
    n_conversations = max(n_messages // MESSAGES_PER_CONVERSATION, SALONS)

    def stamp(days_back: float, days_ahead: float = 0) -> str:
        offset = rng.uniform(-days_back, days_ahead)
        return (now + timedelta(days=offset)).isoformat()

    statuses = ["pending", "confirmed", "cancelled", "completed"]
    reminders = '{"reminders": {"day_before": "sent"}}'

    def bookings():
        for i in range(n_bookings):
            yield (
                str(uuid.uuid4()),
                salon_ids[i % SALONS],
                f"Customer {i}",
                f"+3460{i:07d}",
                "",
                "Haircut",
                stamp(180, 60),
                rng.choices(statuses, weights=(30, 40, 10, 20))[0],
                reminders if rng.random() < 0.3 else "{}",
                stamp(200),
                stamp(200),
            )

    conversation_ids = [str(uuid.uuid4()) for _ in range(n_conversations)]

    def conversations():
        for i, pk in enumerate(conversation_ids):
            yield (
                pk,
                salon_ids[i % SALONS],
                f"3460{i:08d}",
                f"Customer {i}",
                "",
                stamp(30),
                stamp(30),
                stamp(200),
            )

    out_statuses = ["queued", "sent", "delivered", "read", "failed"]

    def messages():
        for i in range(n_messages):
            c = rng.randrange(n_conversations)
            inbound = rng.random() < 0.5
            yield (
                str(uuid.uuid4()),
                salon_ids[c % SALONS],
                conversation_ids[c],
                f"wamid.BENCH{i:010d}",
                "in" if inbound else "out",
                "text",
                "Hello, I would like to book",
                "{}",
                "received"
                if inbound
                else rng.choices(out_statuses, weights=(2, 10, 40, 45, 3))[0],
                "\\N",
                "\\N",
                "\\N",
                "\\N",
                "\\N",
                "\\N",
                stamp(180),
            )

    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # the psycopg 3 cursor, for COPY
        copy_rows(
            cursor,
            "bookings_booking",
            [
                "id",
                "salon_id",
                "customer_name",
                "customer_phone",
                "customer_email",
                "service_name",
                "start_at",
                "status",
                "metadata",
                "created_at",
                "updated_at",
            ],
            bookings(),
            n_bookings,
        )
        copy_rows(
            cursor,
            "messaging_conversation",
            [
                "id",
                "salon_id",
                "customer_wa_id",
                "customer_name",
                "customer_user_id",
                "last_message_at",
                "last_inbound_at",
                "created_at",
            ],
            conversations(),
            n_conversations,
        )
        copy_rows(
            cursor,
            "messaging_message",
            [
                "id",
                "salon_id",
                "conversation_id",
                "wamid",
                "direction",
                "type",
                "body",
                "content",
                "status",
                "error",
                "reply_to_id",
                "sent_at",
                "delivered_at",
                "read_at",
                "failed_at",
                "created_at",
            ],
            messages(),
            n_messages,
        )
    connection.close()
    import psycopg

    print("  vacuum analyze ...", file=sys.stderr)
    with psycopg.connect(f"{args.pg}/{args.db}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# --- server --------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    def __init__(self, args, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/gunicorn"),
                "saas.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(args.workers),
                "--worker-class",
                "gthread",
                "--threads",
                str(args.threads),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("gunicorn exited during start-up")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("gunicorn did not answer in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


# --- measurement ---------------------------------------------------------------
def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Client:
    """A minimal keep-alive HTTP client (http.client): its own overhead is a small
    constant added to every figure, so the ratios stay close to the server's."""

    def __init__(self, url: str, token: str) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=60)

    def get(self, path: str, params=None) -> tuple[int, dict, bytes]:
        if params:
            path = f"{path}?{urlencode(params)}"
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        return response.status, dict(response.getheaders()), body

    def close(self) -> None:
        self.conn.close()


def timed_get(client, path: str, params=None, *, expect: str | None = None) -> float:
    started = time.perf_counter()
    status, headers, body = client.get(path, params)
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise SystemExit(f"{path}: HTTP {status} {body[:200]!r}")
    if expect and headers.get("X-Cache") != expect:
        raise SystemExit(f"{path}: expected X-Cache {expect}, got {headers}")
    return elapsed


def measure_latency(args, server, token, raw_redis, owner_id, salon_id):
    dashboard = "/api/dashboard/stats/"
    results = {name: [] for name in ("floor", "cached", "uncached")}
    per_salon = {"cached": [], "uncached": []}
    all_key = f"dashboard:stats:{owner_id}:"
    salon_key = f"dashboard:stats:{owner_id}:{salon_id}"
    client = Client(server.url, token)
    try:
        for _ in range(20):  # warm up connections, workers and caches
            timed_get(client, "/bench/floor/")
            timed_get(client, dashboard)
            timed_get(client, dashboard, {"salon": salon_id})
        every = max(1, args.rounds // args.uncached)
        for i in range(args.rounds):
            results["floor"].append(timed_get(client, "/bench/floor/"))
            results["cached"].append(timed_get(client, dashboard, expect="hit"))
            per_salon["cached"].append(
                timed_get(client, dashboard, {"salon": salon_id}, expect="hit")
            )
            if i % every == 0:
                raw_redis.delete(all_key, salon_key)
                results["uncached"].append(timed_get(client, dashboard, expect="miss"))
                per_salon["uncached"].append(
                    timed_get(client, dashboard, {"salon": salon_id}, expect="miss")
                )
                timed_get(client, dashboard, expect="hit")
                timed_get(client, dashboard, {"salon": salon_id}, expect="hit")
    finally:
        client.close()
    return results, per_salon


def measure_mix(args, server, token, salon_ids):
    """95% dashboard reads, 5% booking creations, from several clients at once."""
    import httpx

    counts = {"reads": 0, "hits": 0, "writes": 0}
    lock = threading.Lock()
    per_client = args.mix_ops // args.mix_clients

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        local = {"reads": 0, "hits": 0, "writes": 0}
        with httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ) as client:
            for _ in range(per_client):
                if rng.random() < 0.05:
                    response = client.post(
                        "/api/bookings/",
                        json={
                            "salon": rng.choice(salon_ids),
                            "customer_name": "Bench",
                            "customer_phone": "+34600111222",
                            "service_name": "Cut",
                            "start_at": (
                                datetime.now(UTC) + timedelta(days=3)
                            ).isoformat(),
                        },
                    )
                    assert response.status_code == 201, response.text
                    local["writes"] += 1
                else:
                    response = client.get("/api/dashboard/stats/")
                    assert response.status_code == 200, response.text
                    local["reads"] += 1
                    local["hits"] += response.headers["X-Cache"] == "hit"
        with lock:
            for key, value in local.items():
                counts[key] += value

    threads = [
        threading.Thread(target=client_loop, args=(seed,))
        for seed in range(args.mix_clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts["seconds"] = time.monotonic() - started
    return counts


def report(args, results, per_salon, mix, n_bookings, n_messages) -> None:
    def row(name, samples):
        return (
            f"| {name:<34} | {len(samples):>5} | {percentile(samples, 0.5):>8.2f} "
            f"| {percentile(samples, 0.99):>8.2f} |"
        )

    p50 = {k: percentile(v, 0.5) for k, v in results.items()}
    salon_p50 = {k: percentile(v, 0.5) for k, v in per_salon.items()}
    print()
    print(
        f"Data: {SALONS} salons, {n_bookings:,} bookings, {n_messages:,} messages "
        f"(scale {args.scale}); gunicorn {args.workers} workers x {args.threads} "
        "threads (gthread); one keep-alive client (http.client)."
    )
    print()
    print("| request                            |     n |  p50 ms  |  p99 ms  |")
    print("|------------------------------------|-------|----------|----------|")
    print(row("floor (auth DRF view, constant)", results["floor"]))
    print(row("dashboard, all salons, cached", results["cached"]))
    print(row("dashboard, all salons, uncached", results["uncached"]))
    print(row("dashboard, one salon, cached", per_salon["cached"]))
    print(row("dashboard, one salon, uncached", per_salon["uncached"]))
    print()
    print(
        f"All salons: uncached/cached p50 = {p50['uncached'] / p50['cached']:.0f}x "
        f"(target >= 100x); cached/floor p50 = {p50['cached'] / p50['floor']:.2f}x "
        "(target <= 1.5x)"
    )
    print(
        f"One salon:  uncached/cached p50 = "
        f"{salon_p50['uncached'] / salon_p50['cached']:.0f}x"
    )
    hit_rate = mix["hits"] / mix["reads"] if mix["reads"] else 0
    invalidating = 1 - mix["writes"] / mix["reads"] if mix["reads"] else 0
    print(
        f"Mix ({args.mix_clients} clients, {mix['reads']} reads of the all-salons "
        f"dashboard, {mix['writes']} booking creations, {mix['seconds']:.1f} s): "
        f"hit rate {hit_rate:.1%} (target >= 95%). Booking writes patch the cached "
        "value in place, so the misses are the first read and any write that fell "
        "back to invalidation; were every write to invalidate, the bound would be "
        f"1 - writes/reads = {invalidating:.1%}."
    )


def main() -> None:
    args = parse_args()
    env = configure_environment(args)
    n_bookings = max(int(BOOKINGS * args.scale), SALONS)
    n_messages = max(int(MESSAGES * args.scale), SALONS)
    if args.reuse and database_ready(args, n_messages):
        print(f"Reusing database {args.db}.", file=sys.stderr)
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)  # the schema may have moved on
    else:
        print(f"Building database {args.db} ...", file=sys.stderr)
        recreate_database(args)
        import django

        django.setup()
        build_data(args)

    import django
    import redis

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import RefreshToken

    from bookings.models import Booking, Salon
    from messaging.models import Message

    owner = get_user_model().objects.get(username="bench_owner")
    token = str(RefreshToken.for_user(owner).access_token)
    salon_ids = [str(pk) for pk in Salon.objects.values_list("pk", flat=True)]
    n_bookings = Booking.objects.count()
    n_messages = Message.objects.count()
    raw_redis = redis.Redis.from_url(settings.REDIS_CACHE_URL)
    raw_redis.flushdb()
    from django.db import connection

    connection.close()

    server = Gunicorn(args, env)
    try:
        server.wait_ready()
        print("Measuring latency ...", file=sys.stderr)
        results, per_salon = measure_latency(
            args, server, token, raw_redis, owner.pk, salon_ids[0]
        )
        print("Measuring the 95/5 mix ...", file=sys.stderr)
        raw_redis.flushdb()
        mix = measure_mix(args, server, token, salon_ids)
    finally:
        server.stop()
    report(args, results, per_salon, mix, n_bookings, n_messages)


if __name__ == "__main__":
    main()
