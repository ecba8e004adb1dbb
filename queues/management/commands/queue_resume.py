from queues.management.commands._base import QueueCommand
from queues.services import queue_resume


class Command(QueueCommand):
    help = "Resume a paused queue."

    def add_arguments(self, parser):
        self.add_queue_argument(parser)

    def handle(self, *args, queue, **options):
        spec = self.spec(queue)
        stats = queue_resume(spec=spec, actor=self.actor())
        self.stdout.write(
            self.style.SUCCESS(
                f"Resumed {spec.name}; {stats['waiting']} waiting jobs will be taken."
            )
        )
