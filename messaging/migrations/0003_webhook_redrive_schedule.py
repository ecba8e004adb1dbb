"""Beat re-drives pending webhook events every minute (so `make run` has it)."""

from django.db import migrations

TASK_NAME = "whatsapp: re-drive pending webhook events"
TASK = "messaging.webhook_events_redrive"


def provision(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(
        every=1, period="minutes"
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={"task": TASK, "interval": every_minute, "enabled": True},
    )


def unprovision(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0002_webhook_inbox"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(provision, unprovision)]
