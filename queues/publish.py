"""Publishing a job: the one way every app puts work on a queue.

Apps publish by task *name* (``"notifications.email_send"``), never by
importing their tasks module, so a services module does not depend on its
tasks (tasks depend on services). The queue and its default priority come from
the queue's QueueSpec; the retry policy of the job is its task's decorator's,
made from the same QueueSpec (queues.definitions.queue_task_options).
"""

import logging
import uuid
from contextlib import contextmanager
from typing import Any

import redis
from celery import Task, current_app
from celery.exceptions import Ignore
from django.db import transaction

from queues import records
from queues.definitions import QueueSpec, celery_priority
from queues.record_writer import records_discard

logger = logging.getLogger(__name__)

#: One quick retry (a pooled connection gone stale after a broker restart),
#: then give up: kombu's default policy would hold the caller for seconds.
FAIL_FAST_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.05,
    "interval_max": 0.05,
}


@contextmanager
def _forget_record_on_failure(job_id: str, queue: str, *, keep: bool = False):
    """The record is written just before the message is sent; if sending fails,
    the job does not exist and neither should its record (a retried job keeps
    the record it had)."""
    try:
        yield
    except Exception:
        if not keep:
            records_discard(job_id)  # not written yet: never will be
            try:
                records.record_delete(job_id, queue)
            except redis.RedisError:
                # A worker's record was still in its writer and is dropped.
                # One written at once (web), in the instant before the broker
                # went, stays "waiting": the lost-job sweep publishes it later
                # (at least once, as a durable row's re-drive would).
                logger.warning(
                    "Record of unpublished job %s could not be deleted", job_id
                )
        raise


def _queue_of(task: str | Task, queue: QueueSpec | None) -> tuple[str, QueueSpec]:
    name = task if isinstance(task, str) else task.name
    if queue is None:
        queue = getattr(current_app.tasks.get(name), "queue_spec", None)
    if queue is None:
        raise LookupError(f"Name the queue of {name!r}: its task names none.")
    return name, queue


def job_publish(
    task: str | Task,
    *,
    queue: QueueSpec | None = None,
    kwargs: dict[str, Any] | None = None,
    args: list | tuple = (),
    priority: int | None = None,
    job_id: str | None = None,
    on_commit: bool = False,
    durable: str = "",
    producer: Any = None,
    countdown: float | None = None,
):
    """Publish the task named ``task`` on ``queue`` (default: the queue its
    decorator names) at ``priority`` on the seed's scale (default: the
    queue's). Returns the AsyncResult, or None when not published now.

    - ``on_commit``: published after the surrounding transaction commits, so
      a worker never races the row it was sent for.
    - ``durable``: the job is for a row that is already durable (an inbox
      event, an e-mail log, a queued message); the text names it for the log.
      Publishing then fails fast and a broker outage is logged, not raised:
      the row stays as it is until beat re-drives it, so the request that
      wrote it neither waits for the broker nor fails with it.
    - ``job_id``: publish again under an existing id (its record goes on).
    - ``producer``: one kombu producer for many jobs in a row.
    - ``countdown``: seconds before it may run (short waits only: long ETAs
      do not belong in the broker).
    """
    name, spec = _queue_of(task, queue)
    options: dict[str, Any] = {
        "queue": spec.name,
        "priority": celery_priority(spec.priority if priority is None else priority),
    }
    if durable:
        options.update(retry=True, retry_policy=FAIL_FAST_RETRY_POLICY)
    if producer is not None:
        options["producer"] = producer
    if countdown:
        options["countdown"] = countdown

    def publish():
        new_id = job_id or str(uuid.uuid4())
        with _forget_record_on_failure(new_id, spec.name, keep=job_id is not None):
            return current_app.send_task(
                name, args=list(args), kwargs=kwargs or {}, task_id=new_id, **options
            )

    def publish_durably():
        try:
            return publish()
        except Exception as exc:  # kombu raises several unrelated types here
            logger.warning(
                "%s stored but not enqueued (%r); beat re-drives it", durable, exc
            )
            return None

    send = publish_durably if durable else publish
    if on_commit:
        transaction.on_commit(send)
        return None
    return send()


def jobs_publish(
    task: str,
    *,
    queue: QueueSpec,
    kwargs_list: list[dict[str, Any]],
    countdown: float | None = None,
) -> None:
    """Many jobs of one task in a row, over one broker connection."""
    with current_app.producer_or_acquire() as producer:
        for kwargs in kwargs_list:
            job_publish(
                task,
                queue=queue,
                kwargs=kwargs,
                producer=producer,
                countdown=countdown,
            )


#: Header of a copy published by job_defer: the attempt count (retries) it
#: was deferred at, so its run is not counted as another attempt.
DEFERRED_HEADER = "x_deferred_at_retries"
DEFERRED_REASON_HEADER = "x_deferred_reason"


def job_defer(task: Task, *, countdown: float, reason: str):
    """Run the current job again in ``countdown`` seconds without spending an
    attempt (``task.retry`` spends one): a copy with the same id, queue,
    priority and attempt count is published, and this delivery ends quietly
    (celery's Ignore). Its record shows it delayed with ``reason``; the copy's
    run does not add to its attempts. For short waits (a send deferred by the
    throughput governor), never for long ETAs."""
    request = task.request
    task.signature_from_request(
        countdown=max(countdown, 0.0),
        retries=request.retries,
        headers={
            DEFERRED_HEADER: request.retries,
            DEFERRED_REASON_HEADER: reason[:200],
        },
    ).apply_async()
    raise Ignore()


def job_run_is_deferred_copy(request) -> bool:
    """Whether this run is a deferred copy's (not a new attempt)."""
    at = request.get(DEFERRED_HEADER)
    if at is None:
        at = (request.get("headers") or {}).get(DEFERRED_HEADER)
    return at is not None and int(at) == int(request.retries or 0)
