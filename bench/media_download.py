"""Inbound media: a burst of image messages downloaded on whatsapp:media, and
what it does to webhook acknowledgement.

Starts the product the way `make run` does (the Procfile's web, workers and
beat, on PostgreSQL) against the Graph API stand-in in process mode
(tests/graph_api.py, 0.15 s latency on every Graph answer, media lookups
included), registers ``--images`` photos there, then in one run, side by side:

1. text: ``--images`` text webhooks offered at ``--rate`` (open loop);
2. burst: ``--images`` image webhooks offered at the same rate, each naming a
   photo the media worker must look up and download, timed until every photo
   is stored (checked against its SHA-256 by the product);
3. paused: ``whatsapp:media`` paused (``manage.py queue_pause media``), the
   same image burst again: the webhooks' own cost without any download.

Reports the acknowledgement latency of each phase, the p99 ratios burst/paused
(what downloads running meanwhile cost the acknowledgements) and burst/text,
the media worker's CPU per image, and the load average (other work on the
machine moves every figure; the phases run back to back to share it).

    .venv/bin/python bench/media_download.py [--images 500] [--rate 100]

It uses a database and Redis DBs of its own (salon_bench_media, REDIS_DB=2,
REDIS_QUEUE_DB=3 by default), drops and re-creates the database, flushes those
two Redis DBs, and stops every process it started.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    PHONE_NUMBER_ID,
    ROOT,
    Product,
    _webhook_envelope,
    free_port,
    manage,
    offer,
    product_env,
    recreate_database,
    webhook_body,
    webhook_request,
)
from bench.webhook_ingest import CREATE_SALON  # noqa: E402
from tests.graph_api import GraphApiClient  # noqa: E402

TOKEN = "bench-graph-token"


def photo(index: int) -> bytes:
    """A distinct ~40 KB "JPEG" per message."""
    seed = hashlib.sha256(str(index).encode()).digest()
    return b"\xff\xd8\xff\xe0" + seed * 1250


def image_body(wamid: str, index: int, media_id: str, content: bytes) -> bytes:
    wa_id = f"1650556{index % 500:04d}"
    return _webhook_envelope(
        PHONE_NUMBER_ID,
        {
            "contacts": [{"profile": {"name": f"C{index}"}, "wa_id": wa_id}],
            "messages": [
                {
                    "from": wa_id,
                    "id": wamid,
                    "timestamp": str(int(time.time())),
                    "type": "image",
                    "image": {
                        "id": media_id,
                        "mime_type": "image/jpeg",
                        "sha256": base64.b64encode(
                            hashlib.sha256(content).digest()
                        ).decode(),
                    },
                }
            ],
        },
    )


def start_standin(logdir: Path) -> tuple[subprocess.Popen, str]:
    log = open(logdir / "graph.log", "wb")  # noqa: SIM115 (kept open for the child)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.graph_api", "--port", "0"]
        + ["--latency", "0.15", "--token", TOKEN],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    line = proc.stdout.readline().decode()
    if "GRAPH_STANDIN_LISTENING" not in line:
        proc.kill()
        raise RuntimeError(f"stand-in did not start: {line!r}")
    return proc, line.split()[-1]


def media_counts(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT media_status, count(*) FROM messaging_message "
            "WHERE type = 'image' GROUP BY media_status"
        ).fetchall()
    return dict(rows)


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--db", default="salon_bench_media")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-db", default="2")
    parser.add_argument("--redis-queue-db", default="3")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    logdir = Path(tempfile.mkdtemp(prefix="bench-media-"))
    graph_proc, base_url = start_standin(logdir)
    graph = GraphApiClient(base_url)
    graph.wait_ready()
    graph.configure(media_latency=0.15)
    contents = {}
    for i in range(args.images):
        contents[i] = photo(i)
        graph.add_media(f"{9000000 + i}", contents[i], "image/jpeg")

    db_url = f"{args.pg}/{args.db}"
    web_port = free_port()
    env = product_env(
        db_url,
        web_port,
        REDIS_DB=args.redis_db,
        REDIS_QUEUE_DB=args.redis_queue_db,
        WHATSAPP_API_BASE_URL=base_url,
        WHATSAPP_ACCESS_TOKEN=TOKEN,
        MEDIA_ROOT=str(logdir / "media"),
    )
    for db in (args.redis_db, args.redis_queue_db):
        if db in ("0", "1"):
            sys.exit("refusing to flush the development Redis DBs 0/1")
        redis.Redis(db=int(db)).flushdb()
    recreate_database(f"{args.pg}/postgres", args.db)
    manage(env, "migrate", "--no-input", "-v0")
    manage(env, "shell", "-c", CREATE_SALON)

    product = Product({**env, "LOG_LEVEL": "INFO"}, logdir)
    try:
        product.start()
        product.wait_ready(web_port)
        warm = [
            webhook_request(web_port, webhook_body(f"wamid.WARM.{i}", i))
            for i in range(50)
        ]
        asyncio.run(offer(web_port, warm, 50))
        texts = [
            webhook_request(web_port, webhook_body(f"wamid.TEXT.{i:06d}", i % 500))
            for i in range(args.images)
        ]
        baseline = asyncio.run(offer(web_port, texts, args.rate))
        images = [
            webhook_request(
                web_port,
                image_body(f"wamid.IMG.{i:06d}", i, f"{9000000 + i}", contents[i]),
            )
            for i in range(args.images)
        ]
        media_cpu = product.cpu_seconds("media")
        started = time.monotonic()
        burst = asyncio.run(offer(web_port, images, args.rate))
        done = wait_for(
            lambda: media_counts(db_url).get("stored", 0) >= args.images,
            args.timeout,
        )
        stored_after = time.monotonic() - started if done else None
        media_cpu_ms = (product.cpu_seconds("media") - media_cpu) / args.images * 1e3
        counts = media_counts(db_url)
        stats = graph.stats()
        manage(env, "queue_pause", "media", quiet=True)
        time.sleep(2)  # the worker's bootstep reads the flag every second
        again = [
            webhook_request(
                web_port,
                image_body(f"wamid.IMG2.{i:06d}", i, f"{9000000 + i}", contents[i]),
            )
            for i in range(args.images)
        ]
        paused = asyncio.run(offer(web_port, again, args.rate))
    finally:
        product.stop()
        graph_proc.terminate()
        graph_proc.wait()
    for phase in (baseline, burst, paused):
        phase.pop("acked")
        phase.pop("timeline")
    result = {
        "images": args.images,
        "rate": args.rate,
        "all_stored_s": stored_after,
        "media_status": counts,
        "ack_text": baseline,
        "ack_images": burst,
        "ack_images_media_paused": paused,
        "p99_ratio_vs_paused": burst["p99_ms"] / paused["p99_ms"],
        "p99_ratio_vs_text": burst["p99_ms"] / baseline["p99_ms"],
        "media_worker_cpu_ms_per_image": media_cpu_ms,
        "graph": stats,
        "load_average": os.getloadavg(),
    }
    print(
        "| images | offered/s | all stored s | stored | "
        "ack p50 / p99 ms: text | images, downloading | images, media paused | "
        "p99 ratio vs paused / vs text | media CPU ms/image | errors | load avg |"
    )
    print("|" + "---|" * 11)
    stored = "n/a" if stored_after is None else f"{stored_after:.1f}"
    errors = sum(sum(p["errors"].values()) for p in (baseline, burst, paused))
    print(
        f"| {args.images} | {args.rate:.0f} | {stored} | "
        f"{counts.get('stored', 0)} | "
        f"{baseline['p50_ms']:.1f} / {baseline['p99_ms']:.1f} | "
        f"{burst['p50_ms']:.1f} / {burst['p99_ms']:.1f} | "
        f"{paused['p50_ms']:.1f} / {paused['p99_ms']:.1f} | "
        f"{result['p99_ratio_vs_paused']:.2f} / "
        f"{result['p99_ratio_vs_text']:.2f} | {media_cpu_ms:.1f} | {errors} | "
        f"{' '.join(f'{x:.2f}' for x in result['load_average'])} |",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"(logs in {logdir})")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
