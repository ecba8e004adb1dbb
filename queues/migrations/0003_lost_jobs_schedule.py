"""Beat's sweep for jobs the broker lost (queues/lost_jobs.py), every minute,
so `make run` has it."""

from django.db import migrations

from queues.beat import every_minute

TASK_NAME = "queues: publish again the jobs the broker lost"
TASK = "queues.lost_jobs_recover"

provision, unprovision = every_minute(TASK_NAME, TASK)


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0002_i13_queue_roles_and_redrive"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(provision, unprovision)]
