"""The jobs' wiring: queues, priorities, and beat's re-drive schedule."""

import importlib

import pytest
from django.apps import apps
from django_celery_beat.models import PeriodicTask

from messaging import tasks
from queues.definitions import MESSAGE_STATUS, OUTBOUND, WEBHOOK

schedule_migration = importlib.import_module(
    "messaging.migrations.0003_webhook_redrive_schedule"
)
outbound_migration = importlib.import_module(
    "messaging.migrations.0004_message_outbound_redrive"
)


@pytest.mark.parametrize(
    ("task", "spec"),
    [
        (tasks.webhook_event_process_task, WEBHOOK),
        (tasks.webhook_events_redrive_task, WEBHOOK),
        (tasks.message_statuses_apply_task, MESSAGE_STATUS),
        (tasks.message_outbound_send_task, OUTBOUND),
        (tasks.webhook_events_drain_task, WEBHOOK),
        (tasks.messages_outbound_redrive_task, OUTBOUND),
    ],
)
def test_each_job_is_on_its_queue_with_its_retries(task, spec):
    assert task.queue_spec is spec
    assert task.max_retries == spec.max_retries
    assert task.acks_late and task.reject_on_worker_lost


@pytest.mark.django_db
def test_migration_provisions_the_redrive_every_minute_once():
    schedule_migration.provision(apps, None)  # again: idempotent
    (task,) = PeriodicTask.objects.filter(task="messaging.webhook_events_redrive")
    assert task.enabled
    assert (task.interval.every, task.interval.period) == (1, "minutes")
    assert task.task == tasks.webhook_events_redrive_task.name


@pytest.mark.django_db
def test_migration_provisions_the_outbound_redrive_every_minute_once():
    outbound_migration.provision(apps, None)  # again: idempotent
    (task,) = PeriodicTask.objects.filter(task="messaging.messages_outbound_redrive")
    assert task.enabled
    assert (task.interval.every, task.interval.period) == (1, "minutes")
    assert task.task == tasks.messages_outbound_redrive_task.name
