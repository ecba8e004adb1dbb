"""Celery configuration, read by saas/celery.py.

The broker lives on REDIS_QUEUE_DB (its own noeviction instance in production).
"""

from django.conf import settings
from kombu import Queue

from queues.definitions import (
    CELERY_PRIORITY_STEPS,
    QUEUES,
    Priority,
    celery_priority,
    route_task,
)
from saas.broker import broker_sentinel_options, broker_url

# redis://... or, with REDIS_QUEUE_SENTINELS, sentinel://h1:p1/db;sentinel://...
broker_url = broker_url()
broker_connection_retry_on_startup = True
broker_transport_options = {
    "priority_steps": CELERY_PRIORITY_STEPS,
    "queue_order_strategy": "priority",
    "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "retry_on_timeout": True,
    "health_check_interval": 25,
    **broker_sentinel_options(socket_timeout=2, socket_connect_timeout=2),
}
# kombu also reads the visibility timeout here (results are not stored, but a
# configured backend must not disagree with the broker).
result_backend_transport_options = {
    "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT
}
result_backend = None
task_ignore_result = True

task_routes = (route_task,)
task_queues = [Queue(spec.name, routing_key=spec.name) for spec in QUEUES]
task_default_queue = QUEUES[0].name
task_default_priority = celery_priority(Priority.WEBHOOK)
task_create_missing_queues = False

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_soft_time_limit = settings.CELERY_TASK_SOFT_TIME_LIMIT
task_time_limit = settings.CELERY_TASK_TIME_LIMIT
task_track_started = True
worker_send_task_events = True
# Job records (queues.signals) track published jobs; a task-sent event per
# publish would cost the webhook answer another broker round trip.
task_send_sent_event = False
worker_hijack_root_logger = False
worker_max_tasks_per_child = 1000
worker_cancel_long_running_tasks_on_connection_loss = True

timezone = "UTC"
enable_utc = True
beat_scheduler = "queues.beat_leader:LeaderScheduler"
