from celery import shared_task

from bookings import reminder_sending, reminders
from messaging.governed_sending import SendDeferred
from queues.definitions import REMINDER, queue_task_options
from queues.publish import job_defer


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


@shared_task(
    name=reminder_sending.REMINDER_TEST_SEND_TASK,
    bind=True,
    **queue_task_options(REMINDER),
)
def reminder_test_send(self, salon_id: str, to: str, parameters: list[str]) -> str:
    """The operators' test job on booking:reminder."""
    try:
        return reminder_sending.reminder_test_send(
            salon_id=salon_id, to=to, parameters=parameters
        )
    except SendDeferred as deferred:
        # The governor's wait is not a failed attempt.
        job_defer(self, countdown=deferred.retry_after, reason=str(deferred))
