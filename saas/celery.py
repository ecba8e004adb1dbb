"""The Celery app. Queues, routes and priorities come from queues.definitions."""

import os

from celery import Celery

from saas.broker import failover_transport_register

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")

# Before any broker connection: redis:// reconnects after a failover (saas/broker.py).
failover_transport_register()

app = Celery("saas")
app.config_from_object("queues.celeryconfig")
app.autodiscover_tasks()
# Workers honour the durable pause flags and write heartbeats (queues/bootsteps.py).
app.steps["consumer"].add("queues.bootsteps:QueueControl")
