from queues.management.commands._base import QueueCommand
from queues.services import queue_pause


class Command(QueueCommand):
    help = "Pause a queue: its workers take no new job (running ones finish)."

    def add_arguments(self, parser):
        self.add_queue_argument(parser)

    def handle(self, *args, queue, **options):
        spec = self.spec(queue)
        stats = queue_pause(spec=spec, actor=self.actor())
        self.stdout.write(
            self.style.SUCCESS(
                f"Paused {spec.name} ({stats['waiting']} waiting, {stats['active']} "
                "active). It stays paused across worker restarts until "
                f"`manage.py queue_resume {spec.alias}`."
            )
        )
