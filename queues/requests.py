"""The worker's pause guarantee, checked as a job is about to start.

Celery builds each task's Request class at run time and overrides its
``execute_using_pool``, which first asks ``revoked()``; that is the last call
in the consumer's thread before the job goes to the pool. Here it also asks
whether the job's queue is paused (one SISMEMBER on the queue DB). If it is,
the message goes back to the head of its priority list untouched (attempts
unchanged, its record still waiting), and the consumer stops fetching from
that queue at once instead of at the next control tick (queues/bootsteps.py).
"""

import logging

import redis
from celery.worker.request import Request
from celery.worker.state import task_ready
from django.conf import settings

from queues.keys import PAUSED_KEY
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

#: The worker's consumer, set by the QueueControl bootstep (one per process).
_consumer = None


def consumer_register(consumer) -> None:
    global _consumer
    _consumer = consumer


def queue_is_paused(queue: str) -> bool:
    """Fails open: with the queue DB unreachable the broker is too, and the job
    could not be acknowledged anyway."""
    try:
        return bool(queue_redis().sismember(PAUSED_KEY, queue))
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


def _stop_consuming(queue: str) -> None:
    consumer = _consumer
    if consumer is None or consumer.task_consumer is None:
        return
    if consumer.task_consumer.consuming_from(queue):
        logger.info("Queue %s is paused: not taking its jobs", queue)
        consumer.cancel_task_queue(queue)


class PauseAwareRequest(Request):
    def revoked(self) -> bool:
        if super().revoked():
            return True
        if not settings.QUEUE_PAUSE_CHECK_ON_START:
            return False
        queue = (self.delivery_info or {}).get("routing_key") or ""
        if not queue or not queue_is_paused(queue):
            return False
        logger.info("Job %s handed back: queue %s is paused", self.id, queue)
        task_ready(self)
        _requeue_at_head(self._message)
        self.acknowledged = True
        _stop_consuming(queue)
        # True makes Celery skip the job (TaskRevokedError, caught by the
        # worker), without the revoked bookkeeping: the job is not revoked.
        return True
