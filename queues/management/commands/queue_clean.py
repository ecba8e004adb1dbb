from django.core.management.base import CommandError

from queues.management.commands._base import QueueCommand
from queues.services import CLEANABLE_STATES, queue_clean, queue_clean_count


class Command(QueueCommand):
    help = "Remove the records of finished jobs older than a grace period."

    def add_arguments(self, parser):
        self.add_queue_argument(parser)
        parser.add_argument(
            "--grace",
            type=int,
            required=True,
            help="Keep jobs finished less than this many milliseconds ago.",
        )
        parser.add_argument("--status", choices=CLEANABLE_STATES, default="completed")
        parser.add_argument(
            "--dry-run", action="store_true", help="Only say how many would go."
        )

    def handle(self, *args, queue, grace, status, dry_run, **options):
        spec = self.spec(queue)
        if grace < 0:
            raise CommandError("--grace must be 0 or more milliseconds.")
        if dry_run:
            count = queue_clean_count(spec=spec, grace_ms=grace, status=status)
            self.stdout.write(f"Would remove {count} {status} jobs from {spec.name}.")
            return
        removed = queue_clean(
            spec=spec, grace_ms=grace, status=status, actor=self.actor()
        )
        self.stdout.write(
            self.style.SUCCESS(f"Removed {removed} {status} jobs from {spec.name}.")
        )
