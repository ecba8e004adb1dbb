import json
import logging

from celery import shared_task

from queues.definitions import WEBHOOK, queue_task_options
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

TEST_JOB_LOG_KEY = "queues:test-jobs"
TEST_JOB_LOG_LENGTH = 100


@shared_task(name="queues.test_job", **queue_task_options(WEBHOOK))
def queue_test_job(data: dict) -> None:
    """The operators' test job (POST /admin/queue/test): proves a queue is served.

    It leaves its data, newest first, in the queue DB list queues:test-jobs.
    """
    logger.info("Test job ran with %s", data)
    pipe = queue_redis().pipeline()
    pipe.lpush(TEST_JOB_LOG_KEY, json.dumps(data))
    pipe.ltrim(TEST_JOB_LOG_KEY, 0, TEST_JOB_LOG_LENGTH - 1)
    pipe.execute()
