from queues.management.commands._base import QueueCommand
from queues.services import queue_retry_failed, queue_retry_failed_count


class Command(QueueCommand):
    help = "Publish every failed job of a queue again (same job ids)."

    def add_arguments(self, parser):
        self.add_queue_argument(parser)
        parser.add_argument(
            "--dry-run", action="store_true", help="Only say how many would go."
        )

    def handle(self, *args, queue, dry_run, **options):
        spec = self.spec(queue)
        if dry_run:
            count = queue_retry_failed_count(spec=spec)
            self.stdout.write(f"Would retry {count} failed jobs of {spec.name}.")
            return
        retried = queue_retry_failed(spec=spec, actor=self.actor())
        self.stdout.write(
            self.style.SUCCESS(f"Retrying {retried} failed jobs of {spec.name}.")
        )
