"""Provision the reminder dispatcher for django-celery-beat (every minute).

Idempotent: running it on a database that already has the schedule, or has the
task under its name, updates it in place instead of adding a second one.
"""

from django.db import migrations
from django.utils import timezone

TASK_NAME = "booking reminders: dispatch due"
TASK = "bookings.reminder_dispatch"
# Same as queues.definitions: the dispatcher is tiny and gates every reminder,
# so it goes ahead of a backlog (seed priority 10 -> Celery priority 0).
CELERY_PRIORITY_CRITICAL = 0


def provision(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_minute = (
        IntervalSchedule.objects.filter(every=1, period="minutes").order_by("id").first()
        or IntervalSchedule.objects.create(every=1, period="minutes")
    )
    PeriodicTask.objects.update_or_create(
        name=TASK_NAME,
        defaults={
            "task": TASK,
            "interval": every_minute,
            "crontab": None,
            "solar": None,
            "clocked": None,
            "queue": "booking:reminder",
            "priority": CELERY_PRIORITY_CRITICAL,
            # A dispatch nobody picked up within its minute is superseded by the
            # next one; each claims everything due, so none is lost.
            "expire_seconds": 50,
            "enabled": True,
            "one_off": False,
            "description": "Claims due booking reminders (SKIP LOCKED) and queues "
            "them on booking:reminder.",
        },
    )
    # Tell a running beat to reload its schedule (historical models send no
    # signals, so bump the change marker by hand).
    PeriodicTasks.objects.update_or_create(
        ident=1, defaults={"last_update": timezone.now()}
    )


def unprovision(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0002_bookingreminder"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(provision, unprovision)]
