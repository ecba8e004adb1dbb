"""Beat re-drives pending webhook events every minute (so `make run` has it)."""

from django.db import migrations

from queues.beat import every_minute

TASK_NAME = "whatsapp: re-drive pending webhook events"
TASK = "messaging.webhook_events_redrive"


provision, unprovision = every_minute(TASK_NAME, TASK)


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0002_webhook_inbox"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(provision, unprovision)]
