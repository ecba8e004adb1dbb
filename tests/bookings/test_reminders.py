"""Reminders in-process: the dispatcher's claims and the job's single send.

The clock is moved with time-machine; the job's service is called directly
here (end to end through a real worker is in test_tasks.py).
"""

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection

from bookings import reminder_sending, reminders, services
from bookings.models import Booking, BookingReminder
from messaging.models import Conversation, Message
from tests.factories import BookingFactory, SalonFactory, TemplateFactory
from tests.utils import queued_jobs

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
START = NOW + timedelta(days=3)
DAY, HOUR = BookingReminder.Kind.DAY_BEFORE, BookingReminder.Kind.HOUR_BEFORE
DAY_DUE, HOUR_DUE = START - timedelta(hours=24), START - timedelta(hours=1)
REMINDER_JOBS = "booking:reminder"
PRIORITY_SEVEN = "booking:reminder\x06\x163"  # seed 7 -> Celery level 3


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def salon(db):
    salon = SalonFactory(timezone="Europe/Madrid", language="en_US")
    TemplateFactory(
        salon=salon,
        name="booking_reminder",
        body="Hi {{1}}, your {{2}} is on {{3}}.",
    )
    return salon


def book(salon, start=START, **overrides) -> Booking:
    return services.booking_create(
        salon=salon,
        customer_name="Maria Gomez",
        customer_phone="+34612345678",
        customer_email="",
        service_name="Haircut",
        start_at=start,
        **overrides,
    )


def row(booking, kind) -> BookingReminder:
    return BookingReminder.objects.get(booking=booking, kind=kind)


def reminder_job_ids() -> list[int]:
    return [
        reminder_id
        for job in queued_jobs(REMINDER_JOBS, task="bookings.reminder_send")
        for reminder_id in job["kwargs"]["reminder_ids"]
    ]


# --- the dispatcher -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_dispatch_queues_only_what_is_due_at_priority_seven(salon, clock):
    early, late = book(salon), book(salon, start=START + timedelta(days=1))
    assert reminders.reminder_dispatch().queued == 0

    clock.move_to(DAY_DUE)
    report = reminders.reminder_dispatch()

    assert report.queued == 1 and report.skipped == 0
    assert row(early, DAY).status == "queued" and row(early, DAY).queued_at == DAY_DUE
    assert row(early, HOUR).status == "pending"
    assert row(late, DAY).status == "pending"
    [job] = queued_jobs(REMINDER_JOBS)
    assert job["kwargs"] == {"reminder_ids": [row(early, DAY).pk]}
    assert job["key"] == PRIORITY_SEVEN
    # Nothing more is due: a second beat queues nothing again.
    assert reminders.reminder_dispatch().queued == 0
    assert len(reminder_job_ids()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_beat_down_for_an_hour_catches_up(salon, clock):
    bookings = [book(salon, start=START + timedelta(minutes=m)) for m in (0, 20, 40)]
    clock.move_to(DAY_DUE + timedelta(hours=1, minutes=1))

    report = reminders.reminder_dispatch()

    assert report.queued == 3
    assert {row(b, DAY).status for b in bookings} == {"queued"}


@pytest.mark.django_db(transaction=True)
def test_reminders_past_half_their_lead_are_skipped_with_a_reason(salon, clock):
    booking = book(salon)
    clock.move_to(START - timedelta(hours=11))  # day_before's window is over

    report = reminders.reminder_dispatch()

    assert (report.queued, report.skipped) == (0, 1)
    day = row(booking, DAY)
    assert (day.status, day.reason) == (
        "skipped",
        "too late: less than 12 h before the start",
    )
    assert row(booking, HOUR).status == "pending"
    assert reminder_job_ids() == []


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_claim_each_reminder_once(salon):
    count = 1000
    Booking.objects.bulk_create(
        BookingFactory.build(salon=salon, start_at=START) for _ in range(count)
    )
    for booking in Booking.objects.all():
        reminders.reminders_sync(booking=booking, now=NOW)
    due = DAY_DUE  # every day_before reminder is due
    barrier = threading.Barrier(2)
    reports = []

    def dispatcher():
        try:
            barrier.wait(timeout=10)
            reports.append(reminders.reminder_dispatch(now=due, batch_size=50))
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(reports) == 2
    assert sum(r.queued for r in reports) == count
    assert all(r.queued > 0 for r in reports), "both dispatchers should claim some"
    ids = reminder_job_ids()
    assert len(ids) == count
    jobs = queued_jobs(REMINDER_JOBS)
    assert max(len(job["kwargs"]["reminder_ids"]) for job in jobs) == (
        reminders.REMINDER_JOB_SIZE
    )
    assert Counter(ids).most_common(1)[0][1] == 1
    day_before = BookingReminder.objects.filter(kind=DAY)
    assert set(ids) == set(day_before.values_list("pk", flat=True))
    assert not day_before.exclude(status="queued").exists()
    assert (
        not BookingReminder.objects.filter(kind=HOUR).exclude(status="pending").exists()
    )


@pytest.mark.django_db(transaction=True)
def test_stale_queued_rows_are_queued_again(salon, clock):
    booking = book(salon)
    clock.move_to(DAY_DUE)
    reminders.reminder_dispatch()
    from saas.redis import queue_redis

    queue_redis().flushdb()  # the jobs are lost (a broker wiped, a failed publish)
    clock.move_to(DAY_DUE + reminders.REMINDER_REQUEUE_AFTER + timedelta(minutes=1))

    report = reminders.reminder_dispatch()

    assert report.requeued == 1
    assert reminder_job_ids() == [row(booking, DAY).pk]


# --- the job -------------------------------------------------------------------


def queue_due(booking, kind, clock) -> BookingReminder:
    clock.move_to(DAY_DUE if kind == DAY else HOUR_DUE)
    reminders.reminder_dispatch()
    reminder = row(booking, kind)
    assert reminder.status == "queued"
    return reminder


@pytest.mark.django_db(transaction=True)
def test_deliver_sends_records_stamps_and_marks_sent_once(salon, clock):
    booking = book(salon)
    reminder = queue_due(booking, DAY, clock)

    reminder_sending.reminder_deliver(reminder_id=reminder.pk)

    reminder.refresh_from_db()
    assert (reminder.status, reminder.attempts, reminder.sent_at) == (
        "sent",
        1,
        DAY_DUE,
    )
    message = Message.objects.get()
    assert message.wamid == reminder.wamid and message.wamid.startswith("wamid.")
    assert (message.direction, message.type, message.status) == (
        "out",
        "template",
        "sent",
    )
    # Rendered in the salon's time zone: 09:00 UTC is 10:00 in Madrid.
    assert (
        message.body
        == "Hi Maria Gomez, your Haircut is on Friday 4 December 2026, 10:00."
    )
    assert message.content["template"] == {
        "name": "booking_reminder",
        "language": "en_US",
        "parameters": ["Maria Gomez", "Haircut", "Friday 4 December 2026, 10:00"],
    }
    conversation = Conversation.objects.get()
    assert (conversation.customer_wa_id, conversation.salon_id) == (
        "34612345678",
        salon.pk,
    )
    assert conversation.last_message_at == DAY_DUE
    booking.refresh_from_db()
    # Issue 15: the template and language used are recorded beside the stamp.
    assert booking.metadata == {
        "reminders": {"day_before": DAY_DUE.isoformat()},
        "reminder_templates": {
            "day_before": {"name": "booking_reminder", "language": "en_US"}
        },
    }

    # A second delivery of the same job (retry, redelivery) sends nothing.
    reminder_sending.reminder_deliver(reminder_id=reminder.pk)
    assert Message.objects.count() == 1

    hour = queue_due(booking, HOUR, clock)
    reminder_sending.reminder_deliver(reminder_id=hour.pk)
    booking.refresh_from_db()
    assert set(booking.metadata["reminders"]) == {"day_before", "hour_before"}
    assert Message.objects.count() == 2 and Conversation.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_cancelled_after_queueing_is_not_sent(salon, clock):
    booking = book(salon)
    reminder = queue_due(booking, DAY, clock)
    services.booking_cancel(booking=booking)

    reminder_sending.reminder_deliver(reminder_id=reminder.pk)

    reminder.refresh_from_db()
    assert (reminder.status, reminder.reason) == ("skipped", "booking cancelled")
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "change, reason",
    [
        ({"status": "completed"}, "booking completed"),
        ({"status": "cancelled"}, "booking cancelled"),
        ({"start_at": START + timedelta(hours=2)}, "the booking was rescheduled"),
    ],
)
def test_job_rechecks_the_booking_even_behind_the_services_back(
    salon, clock, change, reason
):
    booking = book(salon)
    reminder = queue_due(booking, DAY, clock)
    Booking.objects.filter(pk=booking.pk).update(**change)  # no service involved

    reminder_sending.reminder_deliver(reminder_id=reminder.pk)

    reminder.refresh_from_db()
    assert (reminder.status, reminder.reason) == ("skipped", reason)
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rescheduled_after_queueing_sends_at_the_new_time_only(salon, clock):
    booking = book(salon)
    old = queue_due(booking, DAY, clock)
    services.booking_update(
        booking=booking, data={"start_at": START + timedelta(days=1)}
    )

    reminder_sending.reminder_deliver(reminder_id=old.pk)  # the old job

    assert not Message.objects.exists()
    fresh = row(booking, DAY)
    assert (fresh.status, fresh.due_at) == ("pending", DAY_DUE + timedelta(days=1))


@pytest.mark.django_db(transaction=True)
def test_a_job_that_runs_too_late_skips(salon, clock):
    booking = book(salon)
    reminder = queue_due(booking, DAY, clock)
    clock.move_to(START - timedelta(hours=11))

    reminder_sending.reminder_deliver(reminder_id=reminder.pk)

    reminder.refresh_from_db()
    assert reminder.status == "skipped" and reminder.reason.startswith("too late")


@pytest.mark.django_db(transaction=True)
def test_without_an_approved_template_nor_window_it_fails_with_the_reason(clock):
    salon = SalonFactory(language="es_ES")
    TemplateFactory(salon=salon, name="booking_reminder", language="en_US")
    # Issue 15: with one approved language only, that language would be used.
    TemplateFactory(salon=salon, name="booking_reminder", language="fr_FR")
    TemplateFactory(
        salon=salon, name="booking_reminder", language="es_ES", status="pending"
    )
    booking = book(salon)
    reminder = queue_due(booking, DAY, clock)

    reminder_sending.reminder_deliver(reminder_id=reminder.pk)

    reminder.refresh_from_db()
    assert reminder.status == "failed"
    assert reminder.reason == (
        "no approved WhatsApp template 'booking_reminder' (es_ES) and the customer "
        "has not written in the last 24 hours (Meta refuses free text then)"
    )
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_inside_the_24_hour_window_free_text_is_used(clock):
    salon = SalonFactory(name="Studio", timezone="Europe/Madrid")
    booking = book(salon)
    Conversation.objects.create(
        salon=salon,
        customer_wa_id="34612345678",
        customer_name="Maria (WhatsApp)",
        last_inbound_at=DAY_DUE - timedelta(hours=3),
    )
    reminder = queue_due(booking, DAY, clock)

    reminder_sending.reminder_deliver(reminder_id=reminder.pk)

    message = Message.objects.get()
    assert (message.type, message.status) == ("text", "sent")
    assert message.body == (
        "Hi Maria Gomez, a reminder of your Haircut at Studio on "
        "Friday 4 December 2026, 10:00."
    )
    assert Conversation.objects.get().customer_name == "Maria (WhatsApp)"
    assert row(booking, DAY).status == "sent"


@pytest.mark.django_db(transaction=True)
def test_a_deleted_booking_is_a_no_op(salon, clock):
    booking = book(salon)
    reminder = queue_due(booking, DAY, clock)
    booking.delete()
    assert reminder_sending.reminder_deliver(reminder_id=reminder.pk) is None
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_job_over_its_time_budget_hands_the_rest_on(salon, clock, monkeypatch):
    bookings = [book(salon) for _ in range(3)]
    clock.move_to(DAY_DUE)
    reminders.reminder_dispatch()
    ids = [row(b, DAY).pk for b in bookings]
    from saas.redis import queue_redis

    queue_redis().flushdb()
    monkeypatch.setattr(reminder_sending, "REMINDER_JOB_BUDGET_SECONDS", -1)
    # Issue 15: a job sends in rounds; one reminder per round here.
    monkeypatch.setattr(reminder_sending, "reminder_job_size", lambda rate: 1)

    outcome = reminder_sending.reminders_deliver(reminder_ids=ids)

    assert outcome == {"sent": 1, "handed_on": 2}
    assert row(bookings[0], DAY).status == "sent"
    assert reminder_job_ids() == ids[1:]
    assert {row(b, DAY).status for b in bookings[1:]} == {"queued"}
