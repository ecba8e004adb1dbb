"""What the queue_* commands share: queue lookup and who is acting."""

import getpass

from django.core.management.base import BaseCommand, CommandError

from queues.definitions import QueueSpec, UnknownQueue, queue_spec


class QueueCommand(BaseCommand):
    def add_queue_argument(self, parser, **kwargs) -> None:
        parser.add_argument(
            "queue", help="Full name (whatsapp:webhook) or alias (webhook).", **kwargs
        )

    def spec(self, name: str) -> QueueSpec:
        try:
            return queue_spec(name)
        except UnknownQueue:
            raise CommandError(
                f"Unknown queue {name!r}. Queues: whatsapp:webhook (webhook), "
                "whatsapp:message-status (message-status), booking:reminder "
                "(reminder), notification:email (email), whatsapp:outbound (outbound)."
            ) from None

    def actor(self) -> str:
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = "unknown"
        return f"manage.py {self.command_name} ({who})"

    @property
    def command_name(self) -> str:
        return self.__module__.rsplit(".", 1)[-1]
