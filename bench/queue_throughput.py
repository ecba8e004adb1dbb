"""Queue throughput with job records on and off, side by side in one run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/salon REDIS_QUEUE_DB=12 \\
        .venv/bin/python bench/queue_throughput.py [--jobs 10000] [--rounds 2]

For each worker topology (one prefork worker -c 2; two single-process workers;
one worker with a pool of 4 threads)
it fills whatsapp:webhook with no-op jobs while the queue is paused (so worker
start-up is not timed), resumes it and times the drain, with job records off
and on, alternating, ``--rounds`` times. Then each job type on its own queue
(the test job; the apps' real jobs are listed in JOB_TYPES), and finally the
p99 of get_queue_stats with 100,000 job records.

It flushes REDIS_QUEUE_DB (refuses 0 and 1, the development DBs).
"""

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
os.environ.setdefault("REDIS_QUEUE_DB", "12")
os.environ.setdefault("REDIS_DB", "11")
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from queues import records, signals  # noqa: E402
from queues.definitions import QUEUES, WEBHOOK, queue_spec  # noqa: E402
from queues.keys import PAUSED_KEY, broker_lists  # noqa: E402
from queues.publish import job_publish  # noqa: E402
from queues.selectors import queue_stats, workers_alive  # noqa: E402
from saas.redis import queue_redis  # noqa: E402
from tests.processes import CeleryWorker, celery_worker_args  # noqa: E402
from tests.utils import wait_until  # noqa: E402

TOPOLOGIES = {
    "1 prefork worker -c 2": [("prefork", 2)],
    "2 solo workers": [("solo", 1), ("solo", 1)],
    "1 threads worker -c 4": [("threads", 4)],
}
#: (label, task name, queue alias, kwargs). The apps' real jobs belong here
#: once their tasks exist (their kwargs must be valid for a real run).
JOB_TYPES = [
    ("noop", "queues.noop", "webhook", {}),
    *[
        ("test job", "queues.test_job", spec.alias, {"data": {"n": 1}})
        for spec in QUEUES
    ],
]


def waiting(queue: str) -> int:
    pipe = queue_redis().pipeline(transaction=False)
    for key in broker_lists(queue):
        pipe.llen(key)
    return sum(pipe.execute())


TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgids: set[int]) -> float:
    """CPU time (user + system) of every process in these process groups,
    including reaped children (prefork replaces its children)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:  # field 5, pgrp
            utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
            total += utime + stime + cutime + cstime
    return total / TICKS


def fill(task: str, queue: str, kwargs: dict, jobs: int) -> None:
    spec = queue_spec(queue)
    for _ in range(jobs):
        job_publish(task, queue=spec, kwargs=kwargs)


def start_workers(layout, queue: str, env: dict, logdir: Path) -> list[CeleryWorker]:
    workers = []
    for i, (pool, concurrency) in enumerate(layout):
        name = f"bench{i}-{int(time.time() * 1000)}"
        args = celery_worker_args(
            [queue], name=name, concurrency=concurrency, pool=pool
        )
        # Per-task INFO lines would be most of a no-op's cost.
        args[args.index("INFO")] = "WARNING"
        worker = CeleryWorker(
            name=name,
            args=args,
            env=env,
            log_path=logdir / f"{name}.log",
            queues=[queue],
        )
        workers.append(worker.start())
    names = {f"{worker.name}@{socket.gethostname()}" for worker in workers}
    # Ready when each has written its heartbeat (queues/bootsteps.py).
    wait_until(
        lambda: names <= set(workers_alive(queue)) or any_dead(workers),
        timeout=120,
    )
    if any_dead(workers):
        raise SystemExit(f"a worker died: {workers[0].log()[-2000:]}")
    return workers


def any_dead(workers) -> bool:
    return not all(worker.alive for worker in workers)


def drain(
    layout, task, queue, kwargs, jobs, record: bool, logdir: Path
) -> tuple[float, float]:
    """(jobs per second, worker CPU ms per job) of a topology, records on or off."""
    client = queue_redis()
    client.flushdb()
    client.sadd(PAUSED_KEY, queue)
    env = {
        **os.environ,
        "QUEUE_JOB_RECORDS": "true" if record else "false",
        "LOG_LEVEL": "WARNING",
        "CONN_MAX_AGE": "0",
    }
    if record:
        signals.connect()
    else:
        signals.disconnect()
    workers = start_workers(layout, queue, env, logdir)
    try:
        fill(task, queue, kwargs, jobs)
        client.srem(PAUSED_KEY, queue)
        pgids = {worker.proc.pid for worker in workers}
        while waiting(queue) >= jobs:
            time.sleep(0.002)
        started, left = time.perf_counter(), waiting(queue)
        cpu_started = group_cpu_seconds(pgids)
        wait_until(lambda: waiting(queue) == 0, timeout=600, interval=0.01)
        elapsed = time.perf_counter() - started
        cpu = group_cpu_seconds(pgids) - cpu_started
        return left / elapsed, cpu * 1000 / left
    finally:
        for worker in workers:
            worker.stop()
        signals.disconnect()


def stats_p99(records_count: int = 100_000, samples: int = 2000) -> tuple[float, float]:
    client = queue_redis()
    client.flushdb()
    now = time.time()
    per_state = records_count // 4
    pipe = client.pipeline(transaction=False)
    n = 0
    for state in (records.WAITING, records.DELAYED, records.COMPLETED, records.FAILED):
        for i in range(per_state):
            job_id = f"{state}-{i}"
            pipe.hset(records.job_key(job_id), mapping={"id": job_id, "state": state})
            pipe.zadd(records.state_key(WEBHOOK.name, state), {job_id: now - i})
            n += 1
            if n % 5000 == 0:
                pipe.execute()
    pipe.execute()
    timings = []
    for _ in range(samples):
        t = time.perf_counter()
        queue_stats(WEBHOOK)
        timings.append((time.perf_counter() - t) * 1000)
    timings.sort()
    return timings[int(len(timings) * 0.99) - 1], statistics.median(timings)


HEADER = (
    "| {first} | off jobs/s | on jobs/s | kept "
    "| off CPU ms/job | on CPU ms/job | kept (CPU) |"
)


HEADER = (
    "| {first} | off jobs/s | on jobs/s | kept "
    "| off CPU ms/job | on CPU ms/job | kept (CPU) |"
)


def row(label: str, off: list, on: list) -> str:
    off_rate = statistics.median(r for r, _ in off)
    on_rate = statistics.median(r for r, _ in on)
    off_cpu = statistics.median(c for _, c in off)
    on_cpu = statistics.median(c for _, c in on)
    each = lambda runs: ", ".join(f"{r:.0f}" for r, _ in runs)  # noqa: E731
    return (
        f"| {label} | {off_rate:.0f} ({each(off)}) | {on_rate:.0f} ({each(on)}) "
        f"| {on_rate / off_rate:.0%} | {off_cpu:.3f} | {on_cpu:.3f} "
        f"| {off_cpu / on_cpu:.0%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--type-jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--type-rounds", type=int, default=1)
    parser.add_argument("--skip-noop", action="store_true")
    parser.add_argument("--skip-stats", action="store_true")
    parser.add_argument("--skip-types", action="store_true")
    parser.add_argument(
        "--topology", action="append", choices=list(TOPOLOGIES), help="repeatable"
    )
    opts = parser.parse_args()
    if settings.REDIS_QUEUE_DB in (0, 1):
        sys.exit("bench: refusing to flush REDIS_QUEUE_DB 0/1 (development DBs)")
    logdir = Path(tempfile.mkdtemp(prefix="bench-queues-"))
    print(f"bench: logs in {logdir}")

    if not opts.skip_noop:
        print("\n## No-op drain, job records off vs on")
        print("jobs/s: median of rounds (each round); CPU: worker processes, per job")
        print(HEADER.format(first="topology"))
        print("|---|---|---|---|---|---|---|")
    for label in [] if opts.skip_noop else opts.topology or TOPOLOGIES:
        layout = TOPOLOGIES[label]
        off, on = [], []
        for _ in range(opts.rounds):
            off.append(
                drain(layout, "queues.noop", WEBHOOK.name, {}, opts.jobs, False, logdir)
            )
            on.append(
                drain(layout, "queues.noop", WEBHOOK.name, {}, opts.jobs, True, logdir)
            )
        print(row(label, off, on), flush=True)

    if not opts.skip_types:
        print("\n## Each job type on its queue, 2 solo workers")
        print(HEADER.format(first="job @ queue"))
        print("|---|---|---|---|---|---|---|")
        layout = TOPOLOGIES["2 solo workers"]
        for label, task, alias, kwargs in JOB_TYPES:
            queue = queue_spec(alias).name
            off, on = [], []
            for _ in range(opts.type_rounds):
                off.append(
                    drain(layout, task, queue, kwargs, opts.type_jobs, False, logdir)
                )
                on.append(
                    drain(layout, task, queue, kwargs, opts.type_jobs, True, logdir)
                )
            print(row(f"{label} @ {queue}", off, on), flush=True)

    if not opts.skip_stats:
        p99, median = stats_p99()
        print("\n## get_queue_stats with 100,000 job records")
        print(f"p99 {p99:.2f} ms, median {median:.2f} ms (2,000 calls)")
    queue_redis().flushdb()


if __name__ == "__main__":
    main()
