"""Beat schedules that migrations provision, so a fresh `make run` has them.

Written against the historical models ``apps`` gives a migration, so a schedule
made this way never depends on the current model code.
"""

from collections.abc import Callable
from typing import Any

from django.utils import timezone

Operation = Callable[[Any, Any], None]


def every_minute(name: str, task: str, **options: Any) -> tuple[Operation, Operation]:
    """(provision, unprovision) for RunPython: the periodic task ``name`` runs
    ``task`` every minute with ``options`` (queue, priority, description...).

    Idempotent: on a database that has the task under its name already, it is
    updated in place instead of added twice. A running beat is told to reload
    (historical models send no signals, so the change marker is bumped by
    hand)."""

    def provision(apps, schema_editor) -> None:
        IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
        PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
        interval = IntervalSchedule.objects.filter(every=1, period="minutes").order_by(
            "id"
        ).first() or IntervalSchedule.objects.create(every=1, period="minutes")
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": interval,
                "crontab": None,
                "solar": None,
                "clocked": None,
                "enabled": True,
                "one_off": False,
                **options,
            },
        )
        PeriodicTasks.objects.update_or_create(
            ident=1, defaults={"last_update": timezone.now()}
        )

    def unprovision(apps, schema_editor) -> None:
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
        PeriodicTask.objects.filter(name=name).delete()

    return provision, unprovision
