"""The worker's side of durable pause and of heartbeats.

A consumer bootstep that, once the task consumer exists and before the event
loop fetches anything, stops consuming every queue whose pause flag is set in
the queue Redis DB; then, every QUEUE_CONTROL_INTERVAL_SECONDS, it follows the
flags (cancel / re-add its consumer; a consumer cancelled by hand, from
Flower or remote control, is left alone and shows as stalled) and writes a
heartbeat per queue it serves. A worker started while its queue is paused
never takes a job from it.

The guarantee does not rest on this polling: a job taken before the worker
saw the flag is handed back as it is about to start (queues/requests.py), and
resume is broadcast to the queue's workers (queues/services.py); the polling
is the fallback for a worker that missed the broadcast.
"""

import logging
import time

import redis
from celery import bootsteps
from celery.worker.control import control_command
from django.conf import settings

from queues.health import queue_backlog_sample
from queues.keys import PAUSED_KEY, workers_key
from queues.requests import (
    consumer_hold,
    consumer_register,
    consumer_release,
    held,
    take_check,
)
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

BACKLOG_SAMPLE_EVERY = 5


# Remote control commands, broadcast by queues/services.py to the queue's
# workers so that pause and resume act at once; run in the consumer's thread.
@control_command(args=[("queue", str)], signature="<queue>")
def queues_hold(state, queue):
    """Stop consuming a queue for a pause."""
    consumer_hold(queue)
    return {"ok": f"holding {queue}"}


@control_command(args=[("queue", str)], signature="<queue>")
def queues_release(state, queue):
    """Consume a resumed queue again (unless it was paused again since)."""
    if not queue_redis().sismember(PAUSED_KEY, queue):
        consumer_release(queue)
    return {"ok": f"released {queue}"}


class QueueControl(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.timer_ref = None
        self.queues: list[str] | None = None
        self.ticks = 0
        self.paused_seen: set[str] = set()

    def start(self, c):
        if self.queues is None:
            # Remember what this worker was started for: cancelling a queue
            # deselects it, and a reconnect must not forget it.
            self.queues = sorted(c.app.amqp.queues.consume_from)
        consumer_register(c)
        for queue in self.queues:
            take_check(queue, c.hostname)  # a new consumer has not stalled yet
        try:
            self.apply_pauses(c)
        except redis.RedisError as exc:
            logger.warning("Cannot read queue pause flags: %s", exc)
        self.timer_ref = c.timer.call_repeatedly(
            settings.QUEUE_CONTROL_INTERVAL_SECONDS, self.tick, (c,), priority=10
        )

    def tick(self, c):
        try:
            self.apply_pauses(c)
            self.ticks += 1
            if self.ticks % BACKLOG_SAMPLE_EVERY == 0:
                for queue in self.queues:
                    queue_backlog_sample(queue)
        except redis.RedisError as exc:
            logger.warning("Queue control tick failed: %s", exc)

    def apply_pauses(self, c):
        client = queue_redis()
        pipe = client.pipeline(transaction=False)
        pipe.smembers(PAUSED_KEY)
        now = time.time()
        for queue in self.queues:
            pipe.zadd(workers_key(queue), {c.hostname: now})
        paused = pipe.execute()[0]
        consumer = c.task_consumer
        if consumer is None:
            return
        for queue in self.queues:
            # Logged on the flag's change: a broadcast may have already moved
            # the consumer (queues/services.py).
            if queue in paused and queue not in self.paused_seen:
                logger.info("Queue %s is paused: not taking its jobs", queue)
            elif queue not in paused and queue in self.paused_seen:
                logger.info("Queue %s is resumed: taking its jobs", queue)
            if queue in paused:
                consumer_hold(queue)
            elif queue in held:
                consumer_release(queue)
        self.paused_seen = set(paused) & set(self.queues)

    def stop(self, c):
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def shutdown(self, c):
        self.stop(c)
        try:
            pipe = queue_redis().pipeline(transaction=False)
            for queue in self.queues or ():
                pipe.zrem(workers_key(queue), c.hostname)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("Cannot remove worker heartbeat: %s", exc)
