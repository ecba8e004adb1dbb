import os

from django.conf import settings

from queues.management.commands._base import QueueCommand
from queues.workers import worker_argv


class Command(QueueCommand):
    help = (
        "Run the Celery worker of one or more queues, as QueueSpec defines it "
        "(concurrency from its setting, pool from CELERY_POOL). Replaces this "
        "process, so a supervisor's signals reach the worker."
    )

    def add_arguments(self, parser):
        self.add_queue_argument(parser, nargs="+")
        parser.add_argument("-c", "--concurrency", type=int)
        parser.add_argument("-P", "--pool")
        parser.add_argument("-n", "--name", help="Node name before @host.")

    def handle(self, *args, queue, concurrency=None, pool=None, name=None, **options):
        argv = worker_argv(
            [self.spec(q).name for q in queue],
            name=name,
            concurrency=concurrency,
            pool=pool,
            loglevel=settings.LOG_LEVEL,
        )
        os.execv(argv[0], argv)
