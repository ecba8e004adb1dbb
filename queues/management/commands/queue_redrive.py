from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from queues.management.commands._base import QueueCommand
from queues.redrive import RedriveFilter, queue_redrive_now, redrive_matches


def _when(value: str | None):
    if not value:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(f"Not an ISO date and time: {value!r}.")
    return timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed


class Command(QueueCommand):
    help = (
        "Publish again the failed (or completed) jobs of a queue that match a "
        "filter, at a bounded rate; --dry-run only counts them."
    )

    def add_arguments(self, parser):
        self.add_queue_argument(parser)
        parser.add_argument("--state", default="failed", help="failed or completed")
        parser.add_argument("--task", default="", help="Exact task name.")
        parser.add_argument("--since", help="Entered the state at or after (ISO).")
        parser.add_argument("--until", help="Entered the state at or before (ISO).")
        parser.add_argument("--error", default="", help="Text in the error.")
        parser.add_argument("--text", default="", help="Text in the job's data.")
        parser.add_argument("--rate", type=float, help="Jobs per second.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Only say how many match."
        )

    def handle(self, *args, queue, dry_run, rate, **options):
        spec = self.spec(queue)
        try:
            where = RedriveFilter(
                state=options["state"],
                task=options["task"],
                since=_when(options["since"]),
                until=_when(options["until"]),
                error=options["error"],
                text=options["text"],
            )
            if dry_run:
                count = len(redrive_matches(spec=spec, where=where))
                self.stdout.write(f"Would re-drive {count} jobs of {spec.name}.")
                return
            sent = queue_redrive_now(
                spec=spec, where=where, actor=self.actor(), rate=rate
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Re-drove {sent} jobs of {spec.name}."))
