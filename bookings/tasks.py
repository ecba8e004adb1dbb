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
def reminder_send(reminder_ids: list[int]) -> dict[str, int]:
    """Send queued reminders, each at most once (services.reminder_deliver)."""
    return services.reminders_deliver(reminder_ids=reminder_ids)
