"""The worker's pause guarantee, checked as a job is about to start, and the
per-queue time of the last job taken (stalled consumers, queues/health.py).

Celery builds each task's Request class at run time and overrides its
``execute_using_pool``, which first asks ``revoked()``; that is the last call
in the consumer's thread before the job goes to the pool. Here it also asks
whether the job's queue is paused, in the same round trip that notes the take
(SISMEMBER + HSET on the queue DB). If it is paused, the message goes back to
the head of its priority list untouched (attempts unchanged, its record still
waiting), and the consumer stops fetching from that queue at once instead of
at the next control tick (queues/bootsteps.py).
"""

import logging
import time

import redis
from celery.worker.request import Request
from celery.worker.state import task_ready
from django.conf import settings

from queues.keys import PAUSED_KEY, last_take_key
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

#: The worker's consumer, set by the QueueControl bootstep (one per process).
_consumer = None
#: Queues this worker stopped consuming because of a pause: only these are
#: taken up again on resume (a consumer cancelled by hand, from Flower or
#: remote control, stays cancelled, and shows as stalled).
held: set[str] = set()


def consumer_register(consumer) -> None:
    global _consumer
    _consumer = consumer


def take_check(queue: str, hostname: str) -> bool:
    """Note that ``hostname`` takes a job of ``queue`` now; True if the queue
    is paused. Fails open: with the queue DB unreachable the broker is too,
    and the job could not be acknowledged anyway."""
    try:
        pipe = queue_redis().pipeline(transaction=False)
        pipe.sismember(PAUSED_KEY, queue)
        pipe.hset(last_take_key(queue), hostname, repr(time.time()))
        return bool(pipe.execute()[0])
    except redis.RedisError as exc:
        logger.warning("Cannot read the pause flag of %s: %s", queue, exc)
        return False


def _requeue_at_head(message) -> None:
    """kombu's Redis transport pops from the right: RPUSH puts the message back
    where it was taken from (a plain reject with requeue would LPUSH it behind
    every job published since)."""
    qos = getattr(message.channel, "qos", None)
    if hasattr(qos, "restore_by_tag"):
        qos.restore_by_tag(message.delivery_tag, leftmost=False)
        message.reject(requeue=False)  # already restored: only forget the tag
    else:
        message.reject(requeue=True)


def consumer_hold(queue: str) -> None:
    """Stop consuming ``queue`` for a pause (consumer thread)."""
    consumer = _consumer
    if consumer is None or consumer.task_consumer is None:
        return
    held.add(queue)
    if consumer.task_consumer.consuming_from(queue):
        consumer.cancel_task_queue(queue)


def consumer_release(queue: str) -> None:
    """Consume ``queue`` again if a pause stopped it (consumer thread)."""
    consumer = _consumer
    if consumer is None or consumer.task_consumer is None or queue not in held:
        return
    held.discard(queue)
    if not consumer.task_consumer.consuming_from(queue):
        consumer.add_task_queue(queue)
    # Waiting through a pause is not a stall: count from the resume.
    take_check(queue, consumer.hostname)


class PauseAwareRequest(Request):
    def revoked(self) -> bool:
        if super().revoked():
            return True
        queue = (self.delivery_info or {}).get("routing_key") or ""
        if not queue or not settings.QUEUE_PAUSE_CHECK_ON_START:
            return False
        if not take_check(queue, self.hostname or ""):
            return False
        logger.info("Job %s handed back: queue %s is paused", self.id, queue)
        task_ready(self)
        _requeue_at_head(self._message)
        self.acknowledged = True
        consumer_hold(queue)
        # True makes Celery skip the job (TaskRevokedError, caught by the
        # worker), without the revoked bookkeeping: the job is not revoked.
        return True
