"""booking:reminder end to end: real workers, real broker, the console backend.

Due times are set in the past (the workers' clock is the real one).
"""

from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from bookings import services
from bookings.models import Booking, BookingReminder
from bookings.tasks import reminder_dispatch
from messaging.models import Message
from queues.definitions import REMINDER
from queues.publish import job_publish
from tests.factories import SalonFactory, TemplateFactory
from tests.processes import ManagedProcess, celery_beat_args
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CONSOLE_SEND = "WhatsApp template from"
schedule_migration = import_module(
    "bookings.migrations.0003_reminder_dispatch_schedule"
)


@pytest.fixture
def salon():
    salon = SalonFactory(timezone="Europe/Madrid")
    TemplateFactory(salon=salon, name="booking_reminder")
    return salon


def due_booking(salon, n: int, **overrides) -> Booking:
    """A booking whose hour_before reminder was due ten minutes ago."""
    return services.booking_create(
        salon=salon,
        customer_name=f"Customer {n}",
        customer_phone=f"+3461234{n:04d}",
        service_name="Haircut",
        start_at=timezone.now() + timedelta(minutes=50),
        **overrides,
    )


def sent_count() -> int:
    return BookingReminder.objects.filter(status="sent").count()


def test_due_reminders_are_sent_once_and_inactive_bookings_never(start_worker, salon):
    sent = [due_booking(salon, n) for n in range(5)]
    cancelled, completed, moved = (due_booking(salon, n) for n in (10, 11, 12))
    services.booking_cancel(booking=cancelled)
    services.booking_update(booking=completed, data={"status": "completed"})
    services.booking_update(
        booking=moved, data={"start_at": timezone.now() + timedelta(days=2)}
    )

    job_publish(reminder_dispatch)
    worker = start_worker(REMINDER.name, concurrency=2)
    wait_until(lambda: sent_count() == 5, timeout=60)

    for booking in sent:
        reminder = BookingReminder.objects.get(booking=booking, kind="hour_before")
        message = Message.objects.get(wamid=reminder.wamid)
        assert message.conversation.customer_wa_id == booking.customer_phone[1:]
        booking.refresh_from_db()
        assert set(booking.metadata["reminders"]) == {"hour_before"}
    assert worker.log().count(CONSOLE_SEND) == 5
    assert Message.objects.count() == 5
    assert set(
        BookingReminder.objects.filter(
            booking__in=[cancelled, completed], kind="hour_before"
        ).values_list("status", "reason")
    ) == {("skipped", "booking cancelled"), ("skipped", "booking completed")}
    assert set(
        BookingReminder.objects.filter(booking=moved).values_list("status", flat=True)
    ) == {"pending"}


def test_two_dispatchers_on_two_workers_send_each_reminder_once(start_worker, salon):
    bookings = [due_booking(salon, n) for n in range(60)]
    for _ in range(2):
        job_publish(reminder_dispatch)
    first = start_worker(REMINDER.name, concurrency=2, wait=False)
    second = start_worker(REMINDER.name, concurrency=2, wait=False)
    first.wait_ready(), second.wait_ready()

    wait_until(lambda: sent_count() == len(bookings), timeout=90)

    sends = first.log().count(CONSOLE_SEND) + second.log().count(CONSOLE_SEND)
    assert sends == len(bookings)
    assert Message.objects.count() == len(bookings)
    assert Message.objects.values("wamid").distinct().count() == len(bookings)


def test_migration_provisions_the_dispatcher_idempotently():
    PeriodicTask.objects.filter(name=schedule_migration.TASK_NAME).delete()
    for _ in range(2):
        schedule_migration.provision(apps, None)
    task = PeriodicTask.objects.get(name=schedule_migration.TASK_NAME)
    assert task.task == "bookings.reminder_dispatch" == reminder_dispatch.name
    assert (task.interval.every, task.interval.period) == (1, "minutes")
    assert task.queue == "booking:reminder" and task.priority == 0
    assert task.enabled
    assert PeriodicTask.objects.filter(task="bookings.reminder_dispatch").count() == 1


@pytest.mark.slow
def test_beat_down_for_an_hour_catches_up_on_start(
    start_worker, salon, subprocess_env, tmp_path
):
    """The migration's schedule, run by a real beat: the first tick after an
    hour of downtime sends what is due."""
    bookings = [due_booking(salon, n) for n in range(3)]
    schedule_migration.provision(apps, None)
    PeriodicTask.objects.filter(name=schedule_migration.TASK_NAME).update(
        last_run_at=timezone.now() - timedelta(hours=1)
    )
    start_worker(REMINDER.name)
    beat = ManagedProcess(
        name="beat",
        args=celery_beat_args(),
        env=subprocess_env,
        log_path=tmp_path / "beat.log",
    ).start()
    try:
        wait_until(lambda: sent_count() == len(bookings), timeout=90)
        assert "Sending due task booking reminders: dispatch due" in beat.log()
    finally:
        beat.stop()
