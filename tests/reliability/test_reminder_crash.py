"""A reminder job SIGKILLed mid-way: never a second send once the first was
recorded; the one window left (Meta answered, our commit not done) pinned down.

The job's process is killed with SIGKILL; its worker (task_reject_on_worker_lost)
puts the message back and a fresh process runs the job again.
"""

import os
import signal
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.utils import timezone

from bookings import services
from bookings.models import BookingReminder
from bookings.tasks import reminder_dispatch
from messaging.models import Conversation, Message
from queues.definitions import REMINDER
from queues.publish import job_publish
from saas.redis import queue_redis
from tests.conftest import test_database_url as database_url
from tests.factories import SalonFactory, TemplateFactory
from tests.processes import CeleryWorker, celery_worker_args
from tests.utils import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CONSOLE_SEND = "WhatsApp template from"


def runs(log: str) -> int:
    """How many reminder_send jobs finished (succeeded) in this log."""
    return sum(
        1
        for line in log.splitlines()
        if "Task bookings.reminder_send[" in line and "] succeeded in" in line
    )


@pytest.fixture
def reminder():
    salon = SalonFactory()
    TemplateFactory(salon=salon, name="booking_reminder")
    booking = services.booking_create(
        salon=salon,
        customer_name="Maria Gomez",
        customer_phone="+34612345678",
        service_name="Haircut",
        start_at=timezone.now() + timedelta(minutes=50),
    )
    return BookingReminder.objects.get(booking=booking, kind="hour_before")


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry.name))
    return children


def waiting_on_a_lock() -> bool:
    # Its own session: pg_stat_activity is a snapshot per transaction.
    with psycopg.connect(database_url(), autocommit=True) as db:
        return bool(
            db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()
        )


@pytest.fixture
def locker():
    """A second database session that holds row locks until released."""
    db = psycopg.connect(database_url(), autocommit=False)
    yield db
    db.rollback()
    db.close()


def sent_once(reminder_id) -> BookingReminder:
    return wait_until(
        lambda: (
            (row := BookingReminder.objects.get(pk=reminder_id)).status == "sent"
            and row
        ),
        timeout=60,
    )


def test_killed_after_the_send_was_recorded_does_not_send_again(
    reminder, subprocess_env, tmp_path
):
    hold = tmp_path / "held-pid"
    worker = CeleryWorker(
        name="held",
        args=[
            "tests.reliability.reminder_hold_app" if arg == "saas" else arg
            for arg in celery_worker_args([REMINDER.name], name="held")
        ],
        env={**subprocess_env, "HOLD_AFTER_REMINDER_FILE": str(hold)},
        log_path=tmp_path / "held.log",
        queues=[REMINDER.name],
    )
    try:
        worker.start().wait_ready()
        job_publish(reminder_dispatch)
        wait_until(hold.exists, timeout=60)
        pid = int(wait_until(lambda: hold.read_text().strip()))
        first = BookingReminder.objects.get(pk=reminder.pk)
        assert (first.status, first.attempts) == ("sent", 1)
        assert queue_redis().hlen("unacked") == 1  # the broker has no ack yet

        os.kill(pid, signal.SIGKILL)

        # The job is delivered again, to a fresh process, and finds it sent.
        wait_until(lambda: runs(worker.log()) == 2, timeout=60)
        wait_until(lambda: queue_redis().hlen("unacked") == 0)
        log = worker.log()
        assert "WorkerLostError" in log or "SIGKILL" in log
        assert log.count(CONSOLE_SEND) == 1
        assert Message.objects.count() == 1
        final = BookingReminder.objects.get(pk=reminder.pk)
        assert (final.status, final.attempts, final.wamid) == (
            "sent",
            1,
            first.wamid,
        )
    finally:
        worker.stop()


def test_killed_before_sending_sends_once_on_redelivery(reminder, start_worker, locker):
    # The job locks the booking before it sends: hold that lock so the job
    # is caught there, then kill it.
    locker.execute(
        "SELECT 1 FROM bookings_booking WHERE id = %s FOR UPDATE",
        [reminder.booking_id],
    )
    job_publish(reminder_dispatch)
    worker = start_worker(REMINDER.name)
    wait_until(lambda: waiting_on_a_lock(), timeout=60)
    [child] = child_pids(worker.proc.pid)
    os.kill(child, signal.SIGKILL)
    wait_until(
        lambda: (
            len(child_pids(worker.proc.pid)) == 1
            and child_pids(worker.proc.pid) != [child]
        ),
        timeout=30,
    )
    wait_until(lambda: "WorkerLostError" in worker.log() or "SIGKILL" in worker.log())
    locker.rollback()

    sent = sent_once(reminder.pk)
    assert sent.attempts == 1
    wait_until(lambda: runs(worker.log()) == 1)
    assert worker.log().count(CONSOLE_SEND) == 1
    assert Message.objects.count() == 1


def test_the_documented_window_a_crash_after_metas_answer_sends_twice(
    reminder, start_worker, locker
):
    """docs/REMINDERS.md: between Meta's answer and our commit, a crash loses
    the record of a message Meta accepted, so the redelivered job sends again.
    This test pins the window down; it must stay this narrow."""
    conversation = Conversation.objects.create(
        salon_id=reminder.booking.salon_id, customer_wa_id="34612345678"
    )
    # Recording the message touches the conversation after Meta answered.
    locker.execute(
        "SELECT 1 FROM messaging_conversation WHERE id = %s FOR UPDATE",
        [conversation.pk],
    )
    job_publish(reminder_dispatch)
    worker = start_worker(REMINDER.name)
    wait_until(lambda: CONSOLE_SEND in worker.log(), timeout=60)
    wait_until(lambda: waiting_on_a_lock())
    assert BookingReminder.objects.get(pk=reminder.pk).status == "queued"
    [child] = child_pids(worker.proc.pid)
    os.kill(child, signal.SIGKILL)
    wait_until(lambda: "WorkerLostError" in worker.log() or "SIGKILL" in worker.log())
    locker.rollback()

    sent = sent_once(reminder.pk)
    assert worker.log().count(CONSOLE_SEND) == 2
    assert Message.objects.count() == 1 and Message.objects.get().wamid == sent.wamid
