from celery import shared_task

from bookings import services
from queues.definitions import REMINDER, queue_task_options


@shared_task(name="bookings.reminder_dispatch", **queue_task_options(REMINDER))
def reminder_dispatch() -> dict:
    """Beat, every minute: queue the reminders that are due."""
    report = services.reminder_dispatch()
    return {
        "queued": report.queued,
        "skipped": report.skipped,
        "requeued": report.requeued,
    }


@shared_task(name="bookings.reminder_send", **queue_task_options(REMINDER))
def reminder_send(reminder_id: int) -> str | None:
    """Send one queued reminder (at most once; see services.reminder_deliver)."""
    reminder = services.reminder_deliver(reminder_id=reminder_id)
    return reminder.status if reminder else None
