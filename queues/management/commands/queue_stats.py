from queues.definitions import QUEUES
from queues.management.commands._base import QueueCommand
from queues.selectors import queue_stats, workers_alive

COLUMNS = ("waiting", "active", "delayed", "completed", "failed")


class Command(QueueCommand):
    help = "Show job counts per queue (all queues, or the one named)."

    def add_arguments(self, parser):
        self.add_queue_argument(parser, nargs="?")

    def handle(self, *args, queue=None, **options):
        specs = [self.spec(queue)] if queue else list(QUEUES)
        header = f"{'queue':<26}" + "".join(f"{c:>10}" for c in COLUMNS)
        self.stdout.write(header + f"{'workers':>9}  state")
        for spec in specs:
            stats = queue_stats(spec)
            line = f"{spec.name:<26}" + "".join(f"{stats[c]:>10}" for c in COLUMNS)
            state = "PAUSED" if stats["paused"] else "running"
            self.stdout.write(f"{line}{len(workers_alive(spec.name)):>9}  {state}")
