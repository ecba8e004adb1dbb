"""QueueService: publishing jobs with the seed's priority scale."""

from typing import Any

from celery import Task
from django.db import transaction

from queues.definitions import QueueSpec, celery_priority


def job_enqueue(
    task: Task,
    *,
    kwargs: dict[str, Any] | None = None,
    priority: int | None = None,
    queue: QueueSpec | None = None,
    on_commit: bool = False,
    **publish_options: Any,
):
    """Publish ``task`` with a priority on the seed's scale (10 = most urgent).

    With ``on_commit`` the job is published after the surrounding transaction
    commits, so a worker never races the row it was sent for.
    ``publish_options`` go to apply_async as they are (a short ``retry_policy``
    fails fast when the broker is down, for callers that keep a durable record).
    """
    options: dict[str, Any] = dict(publish_options)
    if priority is not None:
        options["priority"] = celery_priority(priority)
    if queue is not None:
        options["queue"] = queue.name

    def publish():
        return task.apply_async(kwargs=kwargs or {}, **options)

    if on_commit:
        transaction.on_commit(publish)
        return None
    return publish()
