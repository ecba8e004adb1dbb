"""Beat re-drives queued e-mails every minute (so `make run` has it)."""

from django.db import migrations

from queues.beat import every_minute

TASK_NAME = "notifications: re-drive queued e-mails"
TASK = "notifications.emails_redrive"


provision, unprovision = every_minute(
    TASK_NAME,
    TASK,
    queue="notification:email",
    description="Queues again the e-mails still queued after "
    "EMAIL_REDRIVE_AFTER_SECONDS (their enqueue failed, or the job was lost).",
)


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_emaillog_redriven_at"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(provision, unprovision)]
