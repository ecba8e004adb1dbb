import json
import logging

from celery import shared_task

from queues import lost_jobs, redrive
from queues.definitions import (
    WEBHOOK,
    PermanentJobError,
    RetryableJobError,
    queue_task_options,
)
from queues.keys import TEST_JOB_LOG_KEY
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

TEST_JOB_LOG_LENGTH = 100


@shared_task(name="queues.test_job", bind=True, **queue_task_options(WEBHOOK))
def queue_test_job(self, data: dict) -> None:
    """The operators' test job (POST /admin/queue/test): proves a queue is served.

    It leaves its data, newest first, in the queue DB list queues:test-jobs.
    ``{"fail": "why"}`` makes it fail for good and ``{"fail_attempts": n}`` fail
    its first n attempts (retried with the queue's backoff), to try the
    failure and retry paths end to end.
    """
    logger.info("Test job ran with %s", data)
    if isinstance(data, dict):
        if data.get("fail"):
            raise PermanentJobError(str(data["fail"]))
        if self.request.retries < int(data.get("fail_attempts") or 0):
            raise RetryableJobError(f"attempt {self.request.retries + 1} fails")
    pipe = queue_redis().pipeline()
    pipe.lpush(TEST_JOB_LOG_KEY, json.dumps(data))
    pipe.ltrim(TEST_JOB_LOG_KEY, 0, TEST_JOB_LOG_LENGTH - 1)
    pipe.execute()


@shared_task(name="queues.noop", **queue_task_options(WEBHOOK))
def queue_noop_job() -> None:
    """Does nothing: bench/queue_throughput.py measures the queue machinery."""


@shared_task(name=redrive.REDRIVE_TASK, **queue_task_options(WEBHOOK))
def jobs_redrive_task(job_ids: list[str], rate: float, action_id: int) -> int:
    """A re-drive from the page or the API (its action is ``action_id``)."""
    return redrive.jobs_redrive(job_ids=job_ids, rate=rate)


@shared_task(name=lost_jobs.LOST_JOBS_TASK, **queue_task_options(WEBHOOK))
def lost_jobs_recover_task() -> dict:
    """Beat, every minute: publish again the jobs the broker lost."""
    report = lost_jobs.lost_jobs_recover()
    return {
        "suspects": report.suspects,
        "recovered": len(report.recovered),
        "unrecoverable": len(report.unrecoverable),
    }
