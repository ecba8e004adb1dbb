from django.apps import AppConfig
from django.conf import settings


class QueuesConfig(AppConfig):
    name = "queues"

    def ready(self) -> None:
        if settings.QUEUE_JOB_RECORDS:
            from queues import signals

            signals.connect()
