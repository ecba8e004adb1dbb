"""The throughput governor against the real broker Redis, threads and processes."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from messaging.throughput import (
    NUMBERS_KEY,
    control_key,
    pair_key,
    throughput_acquire,
    throughput_acquire_many,
    throughput_deferred,
    throughput_numbers,
    throughput_penalize,
    throughput_state,
    window_key,
)
from saas.redis import queue_redis
from tests.utils import wait_until

ROOT = Path(__file__).resolve().parents[2]
PHONE = "106540352242922"
OTHER_PHONE = "106540352249999"
SECOND = 1_000_000  # microseconds

# A worker process: acquire for distinct customers until told the deadline
# (server time), sleeping only the retry_after the governor answers.
WORKER = """
import json, os, sys, threading, time
import django
django.setup()
from messaging.throughput import throughput_acquire
from saas.redis import queue_redis
phone, name, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
deadline = float(sys.stdin.readline())
granted, lock = [], threading.Lock()
def run(tid):
    n = 0
    while True:
        n += 1
        grant = throughput_acquire(phone, f"{name}-{tid}-{n}")
        if grant.at >= deadline:
            return
        if grant:
            with lock:
                granted.append(round(grant.at * 1e6))
        else:
            time.sleep(min(grant.retry_after, deadline - grant.at))
workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print(json.dumps(granted), flush=True)
"""


def _max_in_any_window(times_us: list[int], window_us: int = SECOND) -> int:
    """Most grants in any half-open window [t, t + window)."""
    times = sorted(times_us)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window_us:
            start += 1
        best = max(best, end - start + 1)
    return best


def _server_now() -> float:
    seconds, micros = queue_redis().time()
    return seconds + micros / 1e6


def test_rate_never_exceeded_in_any_window_across_threads_and_processes():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, PHONE, f"proc{i}", "2"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for i in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        deadline = _server_now() + 3.0
        for proc in procs:
            proc.stdin.write(f"{deadline}\n")
            proc.stdin.flush()

        local, lock = [], threading.Lock()

        def run(tid: int) -> None:
            n = 0
            while True:
                n += 1
                grant = throughput_acquire(PHONE, f"main-{tid}-{n}")
                if grant.at >= deadline:
                    return
                if grant:
                    with lock:
                        local.append(round(grant.at * 1e6))
                else:
                    time.sleep(min(grant.retry_after, deadline - grant.at))

        threads = [threading.Thread(target=run, args=(t,)) for t in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        remote = [json.loads(proc.communicate(timeout=30)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    everything = local + remote[0] + remote[1]
    assert _max_in_any_window(everything) <= 80
    # 3 s at 80/s is 240; the workers share one bucket, whoever asks first wins.
    assert len(everything) >= 200, len(everything)
    assert local and remote[0] and remote[1]
    assert all(proc.returncode == 0 for proc in procs)


def test_pair_is_paced_while_other_customers_are_not():
    first, second, third = (
        throughput_acquire(PHONE, "maria", pair_interval=1.0) for _ in range(3)
    )
    assert first and second and not third
    # Burst of two, then one every interval from the first send.
    assert third.retry_after == pytest.approx(first.at + 1.0 - third.at, abs=1e-5)
    assert throughput_acquire(PHONE, "tom", pair_interval=1.0)

    time.sleep(third.retry_after)
    assert throughput_acquire(PHONE, "maria", pair_interval=1.0)
    assert not throughput_acquire(PHONE, "maria", pair_interval=1.0)


def test_pair_defaults_follow_meta_one_message_every_six_seconds():
    results = [throughput_acquire(PHONE, "maria") for _ in range(3)]
    assert [bool(r) for r in results] == [True, True, False]
    assert results[2].retry_after == pytest.approx(
        results[0].at + 6.0 - results[2].at, abs=1e-5
    )


def test_a_send_takes_both_tokens_or_neither():
    throughput_acquire(PHONE, "maria", pair_interval=60)
    throughput_acquire(PHONE, "maria", pair_interval=60)
    tokens = throughput_state(PHONE)["tokens"]
    assert not throughput_acquire(PHONE, "maria", pair_interval=60)
    assert throughput_state(PHONE)["tokens"] == tokens  # number kept its token

    assert throughput_acquire(OTHER_PHONE, "a", rate=2)
    assert throughput_acquire(OTHER_PHONE, "b", rate=2)
    denied = throughput_acquire(OTHER_PHONE, "carla", rate=2)
    assert not denied
    assert not queue_redis().exists(pair_key(OTHER_PHONE, "carla"))  # pair kept it
    time.sleep(denied.retry_after)
    assert throughput_acquire(OTHER_PHONE, "carla", rate=2)
    assert throughput_acquire(OTHER_PHONE, "carla", rate=2)  # its full burst


def test_retry_after_is_when_the_token_is_there():
    grants = [throughput_acquire(PHONE, f"c{i}", rate=5) for i in range(5)]
    assert all(grants)
    denied = throughput_acquire(PHONE, "late", rate=5)
    assert not denied
    assert 0 < denied.retry_after <= 1.0
    assert denied.retry_after == pytest.approx(grants[0].at + 1 - denied.at, abs=1e-5)
    time.sleep(denied.retry_after)
    assert throughput_acquire(PHONE, "late", rate=5)


def test_per_call_rate_override_for_an_upgraded_number():
    upgraded = throughput_acquire_many([(PHONE, f"c{i}") for i in range(250)], rate=200)
    assert sum(map(bool, upgraded)) == 200
    default = throughput_acquire_many([(OTHER_PHONE, f"c{i}") for i in range(100)])
    assert sum(map(bool, default)) == 80


def test_batch_grants_in_order_and_staggers_the_rest():
    sends = [(PHONE, f"c{i}") for i in range(100)] + [(OTHER_PHONE, "c0")] * 3
    results = throughput_acquire_many(sends)
    assert len(results) == 103
    assert all(results[:80]) and not any(results[80:100])
    waits = [r.retry_after for r in results[80:100]]
    assert waits == sorted(waits) and 0 < waits[0] <= 1.0
    # The other number has tokens; its pair allows a burst of two.
    assert [bool(r) for r in results[100:]] == [True, True, False]
    assert len({r.at for r in results}) == 1  # one script call, one server time
    assert throughput_acquire_many([]) == []


def test_penalty_cuts_the_rate_once_per_window_and_recovers(settings):
    settings.WHATSAPP_THROUGHPUT_BACKOFF = 0.5
    settings.WHATSAPP_THROUGHPUT_PENALTY_HOLD_SECONDS = 1.0
    settings.WHATSAPP_THROUGHPUT_RECOVERY_SECONDS = 2.0
    assert throughput_state(PHONE)["last_130429"] is None

    assert throughput_penalize(PHONE, 130429) == 1.0
    throughput_penalize(PHONE, "130429")  # the same burst of answers: one signal
    state = throughput_state(PHONE)
    assert state["effective_rate"] == 40 and state["rate"] == 80
    assert state["last_130429"] == pytest.approx(state["at"], abs=1.0)
    granted = throughput_acquire_many([(PHONE, f"c{i}") for i in range(80)])
    assert sum(map(bool, granted)) == 40

    seen = set()

    def recovered():
        rate = throughput_state(PHONE)["effective_rate"]
        seen.add(rate)
        return rate == 80

    wait_until(recovered, timeout=5, interval=0.02)
    assert any(40 < rate < 80 for rate in seen)  # additive, not a jump


def test_penalty_keeps_most_of_the_rate_by_default():
    throughput_penalize(PHONE, 130429)
    assert throughput_state(PHONE)["effective_rate"] == 68  # 0.85 x 80


def test_penalty_stops_at_the_floor(settings):
    settings.WHATSAPP_THROUGHPUT_FLOOR = 72  # above 0.85 x 80
    throughput_penalize(PHONE, 130429)
    assert throughput_state(PHONE)["effective_rate"] == 72


def test_131056_penalizes_only_the_pair():
    assert throughput_acquire(PHONE, "maria")
    wait = throughput_penalize(PHONE, 131056, recipient="maria")
    assert 5.9 < wait <= 6.0
    denied = throughput_acquire(PHONE, "maria")
    assert not denied and denied.retry_after == pytest.approx(wait, abs=0.5)
    assert throughput_acquire(PHONE, "tom")
    assert throughput_state(PHONE)["effective_rate"] == 80
    with pytest.raises(ValueError):
        throughput_penalize(PHONE, 131056)
    with pytest.raises(ValueError):
        throughput_penalize(PHONE, 131047, recipient="maria")


def test_state_reports_tokens_deferred_and_numbers():
    throughput_acquire_many([(PHONE, f"c{i}") for i in range(30)])
    throughput_acquire(OTHER_PHONE, "maria")
    assert throughput_deferred(PHONE) == 1
    assert throughput_deferred(PHONE, 4) == 5
    state = throughput_state(PHONE)
    assert state["tokens"] == 50 and state["sent_in_window"] == 30
    assert state["deferred"] == 5 and state["effective_rate"] == 80

    queue_redis().zadd(NUMBERS_KEY, {"stale": _server_now() - 3601})
    assert throughput_numbers() == [OTHER_PHONE, PHONE]
    assert throughput_state("never-seen")["tokens"] == 80


def test_every_key_expires_and_idle_numbers_leave_nothing():
    client = queue_redis()
    throughput_acquire_many([(PHONE, "maria")] * 2, pair_interval=0.2)
    throughput_penalize(PHONE, 130429)
    throughput_deferred(PHONE)
    keys = client.keys("wa:tput:*")
    assert set(keys) == {
        NUMBERS_KEY,
        window_key(PHONE),
        control_key(PHONE),
        pair_key(PHONE, "maria"),
    }
    ttls = {key: client.pttl(key) for key in keys}
    assert all(0 < ttl <= 3600_000 for ttl in ttls.values()), ttls
    assert ttls[window_key(PHONE)] <= 2000
    assert ttls[pair_key(PHONE, "maria")] <= 401

    wait_until(
        lambda: not client.exists(window_key(PHONE), pair_key(PHONE, "maria")),
        timeout=4,
    )
