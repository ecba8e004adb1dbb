"""The Celery app. Queues, routes and priorities come from queues.definitions."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")

app = Celery("saas")
app.config_from_object("queues.celeryconfig")
app.autodiscover_tasks()
# Workers honour the durable pause flags and write heartbeats (queues/bootsteps.py).
app.steps["consumer"].add("queues.bootsteps:QueueControl")
