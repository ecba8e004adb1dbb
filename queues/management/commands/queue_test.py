import json

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from queues.api.serializers import test_job_errors
from queues.facade import queue_test_job_run
from queues.management.commands._base import QueueCommand
from queues.services import queue_test_job_enqueue


class Command(QueueCommand):
    help = (
        "Send a test job that does the queue's real work with the seed's data "
        "(as POST /admin/queue/test); --dry-run sends the no-op job instead."
    )

    def add_arguments(self, parser):
        self.add_queue_argument(parser)
        parser.add_argument("--data", default="{}", help="The job's data, JSON.")
        parser.add_argument(
            "--dry-run", action="store_true", help="The no-op job only."
        )

    def handle(self, *args, queue, data, dry_run, **options):
        spec = self.spec(queue)
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--data is not JSON: {exc}") from None
        if dry_run:
            job_id = queue_test_job_enqueue(spec=spec, data=data, actor=self.actor())
            self.stdout.write(f"No-op test job {job_id} sent to {spec.name}.")
            return
        errors = test_job_errors(spec.name, data)
        if errors:
            raise CommandError(json.dumps(errors))
        try:
            answer = queue_test_job_run(spec=spec, data=data, actor=self.actor())
        except ValidationError as exc:
            raise CommandError(json.dumps(exc.message_dict)) from None
        self.stdout.write(self.style.SUCCESS(json.dumps(answer)))
