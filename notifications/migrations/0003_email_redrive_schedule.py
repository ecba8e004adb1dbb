"""Beat re-drives queued e-mails every minute (so `make run` has it)."""

from django.db import migrations

TASK_NAME = "notifications: re-drive queued e-mails"
TASK = "notifications.emails_redrive"


def provision(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute = (
        IntervalSchedule.objects.filter(every=1, period="minutes").order_by("id").first()
        or IntervalSchedule.objects.create(every=1, period="minutes")
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": TASK,
            "interval": every_minute,
            "queue": "notification:email",
            "enabled": True,
            "description": "Queues again the e-mails still queued after "
            "EMAIL_REDRIVE_AFTER_SECONDS (their enqueue failed, or the job was lost).",
        },
    )


def unprovision(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_emaillog_redriven_at"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(provision, unprovision)]
