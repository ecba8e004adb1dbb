"""The cost per job of the pause check at job start (issue 13), side by side.

    REDIS_DB=4 REDIS_QUEUE_DB=5 \\
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/salon_i13 \\
        .venv/bin/python bench/pause_check.py [--jobs 4000] [--rounds 3]

Each round drains ``--jobs`` no-op jobs through the same worker topology with
the check off (QUEUE_PAUSE_CHECK_ON_START=false: the job start is as before
issue 13) and on, alternating within the round, job records on in both. It
reports jobs per second and worker CPU (user + system, the whole process
group) per job, and the ratio on/off; then the check's own round trip
(SISMEMBER + HSET, one pipeline) timed in this process. The load average is
printed with each round.

It flushes REDIS_QUEUE_DB (refuses 0 and 1, the development DBs).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings  # noqa: E402

from bench.queue_throughput import (  # noqa: E402  (sets up Django)
    group_cpu_seconds,
    start_workers,
    waiting,
)
from queues import signals  # noqa: E402
from queues.definitions import WEBHOOK  # noqa: E402
from queues.keys import PAUSED_KEY  # noqa: E402
from queues.publish import jobs_publish  # noqa: E402
from queues.requests import take_check  # noqa: E402
from saas.redis import queue_redis  # noqa: E402
from tests.utils import wait_until  # noqa: E402

TOPOLOGIES = {
    "1 prefork worker -c 2": [("prefork", 2)],
    "1 threads worker -c 4": [("threads", 4)],
}


def drain(layout, jobs: int, check: bool, logdir: Path) -> tuple[float, float]:
    """(jobs per second, worker CPU ms per job)."""
    client = queue_redis()
    client.flushdb()
    client.sadd(PAUSED_KEY, WEBHOOK.name)  # fill while paused: start-up untimed
    env = {
        **os.environ,
        "QUEUE_PAUSE_CHECK_ON_START": "true" if check else "false",
        "LOG_LEVEL": "WARNING",
        "CONN_MAX_AGE": "0",
    }
    signals.connect()
    workers = start_workers(layout, WEBHOOK.name, env, logdir)
    try:
        for start in range(0, jobs, 500):
            batch = min(500, jobs - start)
            jobs_publish("queues.noop", queue=WEBHOOK, kwargs_list=[{}] * batch)
        client.srem(PAUSED_KEY, WEBHOOK.name)
        pgids = {worker.proc.pid for worker in workers}
        while waiting(WEBHOOK.name) >= jobs:
            time.sleep(0.002)
        started, left = time.perf_counter(), waiting(WEBHOOK.name)
        cpu_started = group_cpu_seconds(pgids)
        wait_until(lambda: waiting(WEBHOOK.name) == 0, timeout=900, interval=0.01)
        elapsed = time.perf_counter() - started
        cpu = group_cpu_seconds(pgids) - cpu_started
        return left / elapsed, cpu * 1000 / left
    finally:
        for worker in workers:
            worker.stop()


def check_round_trip(samples: int = 5000) -> float:
    """Median microseconds of one take_check (the call made per job)."""
    timings = []
    for _ in range(samples):
        t = time.perf_counter()
        take_check(WEBHOOK.name, "bench@host")
        timings.append((time.perf_counter() - t) * 1e6)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    if settings.REDIS_QUEUE_DB in (0, 1):
        sys.exit("bench: refusing to flush REDIS_QUEUE_DB 0/1 (development DBs)")
    logdir = Path(tempfile.mkdtemp(prefix="pause-check-"))
    print(f"{options.jobs} no-op jobs per drain, records on; logs in {logdir}")
    print(
        "| round | topology | load avg (1 min) | off jobs/s | on jobs/s | on/off "
        "| off CPU ms/job | on CPU ms/job | on/off CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for round_number in range(1, options.rounds + 1):
        for label, layout in TOPOLOGIES.items():
            # Alternate which goes first, so drift does not favour one side.
            order = (False, True) if round_number % 2 else (True, False)
            results = {
                check: drain(layout, options.jobs, check, logdir) for check in order
            }
            (off_rate, off_cpu), (on_rate, on_cpu) = results[False], results[True]
            print(
                f"| {round_number} | {label} | {os.getloadavg()[0]:.2f} "
                f"| {off_rate:.0f} | {on_rate:.0f} | {on_rate / off_rate:.3f} "
                f"| {off_cpu:.3f} | {on_cpu:.3f} | {on_cpu / off_cpu:.3f} |",
                flush=True,
            )
    queue_redis().flushdb()
    print(
        f"take_check round trip (this process): median "
        f"{check_round_trip():.0f} us, load avg {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
