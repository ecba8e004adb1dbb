from celery import shared_task

from bookings import reminder_sending, reminders
from queues.definitions import REMINDER, queue_task_options


@shared_task(name="bookings.reminder_dispatch", **queue_task_options(REMINDER))
def reminder_dispatch() -> dict:
    """Beat, every minute: queue the reminders that are due."""
    report = reminders.reminder_dispatch()
    return {
        "queued": report.queued,
        "skipped": report.skipped,
        "requeued": report.requeued,
    }


@shared_task(name=reminders.REMINDER_SEND_TASK, **queue_task_options(REMINDER))
def reminder_send(
    reminder_ids: list[int], deferred_ids: list[int] | None = None
) -> dict[str, int]:
    """Send queued reminders, each at most once, paced by the throughput
    governor (reminder_sending.reminders_deliver)."""
    return reminder_sending.reminders_deliver(
        reminder_ids=reminder_ids, deferred_ids=deferred_ids
    )
