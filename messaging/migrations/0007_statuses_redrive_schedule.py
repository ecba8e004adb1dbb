"""Beat's re-drive of delivery statuses after the broker's Redis changed
(messaging/status_redrive.py), every minute, so `make run` has it."""

from django.db import migrations

from queues.beat import every_minute

TASK_NAME = "whatsapp: statuses again after a broker failover"
TASK = "messaging.statuses_redrive_after_broker_switch"

provision, unprovision = every_minute(TASK_NAME, TASK)


class Migration(migrations.Migration):

    dependencies = [
        ("messaging", "0005_i15_template_lifecycle"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(provision, unprovision)]
