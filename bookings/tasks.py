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
def reminder_send(reminder_ids: list[int]) -> dict[str, int]:
    """Send queued reminders, each at most once (reminder_sending.reminder_deliver)."""
    return reminder_sending.reminders_deliver(reminder_ids=reminder_ids)


@shared_task(
    name=reminder_sending.REMINDER_TEST_SEND_TASK, **queue_task_options(REMINDER)
)
def reminder_test_send(salon_id: str, to: str, parameters: list[str]) -> str:
    """The operators' test job on booking:reminder."""
    return reminder_sending.reminder_test_send(
        salon_id=salon_id, to=to, parameters=parameters
    )
