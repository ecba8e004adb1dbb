"""Provision the reminder dispatcher for django-celery-beat (every minute).

Idempotent: running it on a database that already has the schedule, or has the
task under its name, updates it in place instead of adding a second one.
"""

from django.db import migrations

from queues.beat import every_minute

TASK_NAME = "booking reminders: dispatch due"
TASK = "bookings.reminder_dispatch"
# Same as queues.definitions: the dispatcher is tiny and gates every reminder,
# so it goes ahead of a backlog (seed priority 10 -> Celery priority 0).
CELERY_PRIORITY_CRITICAL = 0


provision, unprovision = every_minute(
    TASK_NAME,
    TASK,
    queue="booking:reminder",
    priority=CELERY_PRIORITY_CRITICAL,
    # A dispatch nobody picked up within its minute is superseded by the next
    # one; each claims everything due, so none is lost.
    expire_seconds=50,
    description="Claims due booking reminders (SKIP LOCKED) and queues them on "
    "booking:reminder.",
)


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0002_bookingreminder"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(provision, unprovision)]
