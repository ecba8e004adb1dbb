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
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    PHONE_NUMBER_ID,
    Product,
    command_cpu_seconds,
    free_port,
    healthz_request,
    manage,
    offer,
    own_cpu_seconds,
    percentile,
    product_env,
    recreate_database,
    timeline_rows,
    webhook_body,
    webhook_request,
)

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
    parser.add_argument(
        "--timeline", action="store_true", help="print ack latency second by second"
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]

    db_url = f"{args.pg}/{args.db}"
    web_port = free_port()
    env = product_env(
        db_url,
        web_port,
        REDIS_DB=args.redis_db,
        REDIS_QUEUE_DB=args.redis_queue_db,
    )
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
            floor.pop("timeline")
            floor["web_cpu_ms"] = (product.cpu_seconds("web") - web_cpu) / count * 1e3
            web_cpu = product.cpu_seconds("web")
            worker_cpu = product.cpu_seconds("webhook")
            others = (command_cpu_seconds("postgres"), own_cpu_seconds())
            prefix = f"wamid.BENCH.{rate}."
            bodies = [
                webhook_request(web_port, webhook_body(f"{prefix}{i:06d}", i % 500))
                for i in range(count)
            ]
            hooks = asyncio.run(offer(web_port, bodies, rate))
            timeline = hooks.pop("timeline")
            if args.timeline:
                print(f"{rate}/s, webhooks:", *timeline_rows(timeline), sep="\n")
            hooks["web_cpu_ms"] = (product.cpu_seconds("web") - web_cpu) / count * 1e3
            hooks["client_cpu_ms"] = (own_cpu_seconds() - others[1]) / count * 1e3
            drain = wait_drained(db_url, args.drain_timeout)
            hooks["postgres_cpu_ms"] = (
                (command_cpu_seconds("postgres") - others[0]) / count * 1e3
            )
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
            "worker CPU ms/event | PostgreSQL CPU ms/event | client CPU ms/req | "
            "load avg |"
        )
        print("|" + "---|" * 17)
    hooks, floor = r["webhook"], r["healthz"]
    drain = "n/a" if r["drain_s"] is None else f"{r['drain_s']:.1f}"
    errors = sum(hooks["errors"].values())
    print(
        f"| {r['rate']} | {hooks['achieved_rate']:.0f} | {errors} | "
        f"{hooks['p50_ms']:.1f} | {hooks['p99_ms']:.1f} | {floor['p99_ms']:.1f} | "
        f"{r['p99_ratio']:.1f} | {r['e2e_p50_ms']:.0f} | {r['e2e_p95_ms']:.0f} | "
        f"{drain} | {r['lost']} | {r['duplicated']} | "
        f"{hooks['web_cpu_ms']:.2f} / {floor['web_cpu_ms']:.2f} | "
        f"{hooks['worker_cpu_ms']:.1f} | {hooks['postgres_cpu_ms']:.2f} | "
        f"{hooks['client_cpu_ms']:.2f} | {r['load_average'][0]:.1f} |",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
