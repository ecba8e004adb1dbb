"""Two beats at once: each periodic task is sent once per period.

Both run LeaderScheduler; one holds the lease and sends, the other stands by
and takes over when the first is SIGKILLed. Nothing consumes the queue, so
the broker's list counts every send: two beats without the lease would send
each period twice, over the bound asserted here."""

import signal
import time

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from queues.beat_leader import beat_lease_hold, beat_send_claim
from queues.definitions import WEBHOOK
from queues.keys import broker_lists
from saas.redis import queue_redis
from tests.processes import ManagedProcess, celery_beat_args
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PERIOD = 2


def sent() -> int:
    pipe = queue_redis().pipeline(transaction=False)
    for key in broker_lists(WEBHOOK.name):
        pipe.llen(key)
    return sum(pipe.execute())


def test_one_lease_holder_at_a_time():
    assert beat_lease_hold("a", 5)
    assert beat_lease_hold("a", 5)  # renewed
    assert not beat_lease_hold("b", 5)
    queue_redis().delete("queues:beat:leader")  # expired, or lost in a failover
    assert beat_lease_hold("b", 5)
    assert not beat_lease_hold("a", 5)


def test_a_second_send_in_the_same_period_is_refused():
    from datetime import timedelta

    assert beat_send_claim("task", timedelta(seconds=60))
    assert not beat_send_claim("task", timedelta(seconds=60))
    assert beat_send_claim("other", timedelta(seconds=60))
    assert beat_send_claim("no period", None) and beat_send_claim("no period", None)


def test_two_beats_send_each_periodic_task_once_per_period(subprocess_env, tmp_path):
    PeriodicTask.objects.update(enabled=False)
    every, _ = IntervalSchedule.objects.get_or_create(every=PERIOD, period="seconds")
    PeriodicTask.objects.create(
        name="test: noop", task="queues.noop", interval=every, queue=WEBHOOK.name
    )
    PeriodicTasks.update_changed()
    env = {**subprocess_env, "BEAT_LEASE_SECONDS": "3"}
    started_at = time.monotonic()
    beats = [
        ManagedProcess(
            name=f"beat{n}",
            args=celery_beat_args(),
            env=env,
            log_path=tmp_path / f"beat{n}.log",
        ).start()
        for n in range(2)
    ]
    try:

        def within_bound(at_least: int) -> bool:
            count, elapsed = sent(), time.monotonic() - started_at
            # Sends of one beat are at least a period apart; two would double it.
            assert count <= elapsed / PERIOD + 1, (count, elapsed)
            return count >= at_least

        wait_until(lambda: within_bound(8), timeout=90, message="eight periods")
        leaders = [b for b in beats if "holds the lease: sending" in b.log()]
        assert len(leaders) == 1, [b.log()[-2000:] for b in beats]
        standby = next(b for b in beats if b is not leaders[0])
        assert "standing by" in standby.log()

        leaders[0].kill(signal.SIGKILL)
        before = sent()
        wait_until(lambda: within_bound(before + 3), timeout=60, message="take-over")
        assert "holds the lease: sending" in standby.log()
    finally:
        for beat in beats:
            beat.stop()
