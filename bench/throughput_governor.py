"""CPU cost of the throughput governor per send, beside a plain PING per send.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/salon REDIS_QUEUE_DB=7 \\
        .venv/bin/python bench/throughput_governor.py [--sends 5000] [--rounds 3]

In one run, alternating ``--rounds`` times, it measures per send: client CPU
(process time, microseconds), wall time and round trips (packets the client
sent) for a PING baseline, a granted single acquisition, a batch of 100, and a
denied single acquisition. Results are reported as ratios to the PING so they
mean the same on any machine. The rate is set far above the send count so the
granted paths are not limited; every customer is distinct.

It deletes only the governor's keys (wa:tput:*) in REDIS_QUEUE_DB, before and after.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
os.environ.setdefault("REDIS_QUEUE_DB", "7")
os.environ.setdefault("REDIS_DB", "6")
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402

from messaging.throughput import (  # noqa: E402
    KEY_PREFIX,
    throughput_acquire,
    throughput_acquire_many,
)
from saas.redis import queue_redis  # noqa: E402

UNLIMITED = 1e9
round_trips = 0
_send = redis.connection.Connection.send_packed_command


def _counting_send(self, command, check_health=True):
    global round_trips
    round_trips += 1
    return _send(self, command, check_health)


redis.connection.Connection.send_packed_command = _counting_send


def _clean() -> None:
    client = queue_redis()
    for keys in _batched(client.scan_iter(KEY_PREFIX + "*", count=1000), 500):
        client.unlink(*keys)


def _batched(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _measure(name: str, sends: int, run) -> dict:
    global round_trips
    round_trips = 0
    cpu, wall = time.process_time(), time.perf_counter()
    run(sends)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "name": name,
        "cpu_us": cpu / sends * 1e6,
        "wall_us": wall / sends * 1e6,
        "round_trips": round_trips / sends,
    }


def ping(sends: int) -> None:
    client = queue_redis()
    for _ in range(sends):
        client.ping()


def single(sends: int) -> None:
    tag = time.monotonic_ns()
    for i in range(sends):
        assert throughput_acquire("bench-single", f"{tag}-{i}", rate=UNLIMITED)


def batch(sends: int, size: int = 100) -> None:
    tag = time.monotonic_ns()
    for start in range(0, sends, size):
        grants = throughput_acquire_many(
            [("bench-batch", f"{tag}-{i}") for i in range(start, start + size)],
            rate=UNLIMITED,
        )
        assert all(grants)


def denied(sends: int) -> None:
    throughput_acquire("bench-denied", "first", rate=1)
    for i in range(sends):
        assert not throughput_acquire("bench-denied", f"d{i}", rate=1)


CASES = [
    ("PING per send (baseline)", ping),
    ("acquire, granted", single),
    ("acquire_many x100, granted", batch),
    ("acquire, denied", denied),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sends = args.sends - args.sends % 100

    _clean()
    queue_redis().ping()
    throughput_acquire("bench-warmup", "x")  # load the scripts
    results: dict[str, list[dict]] = {name: [] for name, _ in CASES}
    try:
        for _ in range(args.rounds):
            for name, run in CASES:
                results[name].append(_measure(name, sends, run))
                _clean()
    finally:
        _clean()

    def median(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    base_cpu = median(CASES[0][0], "cpu_us")
    base_wall = median(CASES[0][0], "wall_us")
    print(
        f"{sends} sends x {args.rounds} rounds, Redis DB "
        f"{queue_redis().connection_pool.connection_kwargs.get('db')}, medians"
    )
    print(
        f"{'case':28} {'CPU us/send':>11} {'x PING':>7} {'wall us/send':>12} "
        f"{'x PING':>7} {'trips/send':>10}"
    )
    for name, _ in CASES:
        cpu, wall = median(name, "cpu_us"), median(name, "wall_us")
        print(
            f"{name:28} {cpu:11.1f} {cpu / base_cpu:7.2f} {wall:12.1f} "
            f"{wall / base_wall:7.2f} {median(name, 'round_trips'):10.3f}"
        )


if __name__ == "__main__":
    main()
