"""Thin jobs for the WhatsApp queues: ids and plain JSON in, one service call."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from messaging import inbox, media, outbound, services, status_redrive
from messaging.governed_sending import SendDeferred
from queues.definitions import (
    MEDIA,
    MESSAGE_STATUS,
    OUTBOUND,
    WEBHOOK,
    queue_task_options,
)
from queues.publish import job_defer


@shared_task(
    name=inbox.WEBHOOK_EVENT_PROCESS_TASK, bind=True, **queue_task_options(WEBHOOK)
)
def webhook_event_process_task(self, event_id: int) -> None:
    """One event: the seed's explicit webhook jobs and the admin's retries."""
    inbox.webhook_event_process(event_id=event_id)


@shared_task(
    name=inbox.WEBHOOK_EVENTS_DRAIN_TASK, bind=True, **queue_task_options(WEBHOOK)
)
def webhook_events_drain_task(self) -> int:
    """Every pending event, batch after batch: what a webhook's kick queues."""
    return inbox.webhook_events_drain(
        batch_size=settings.WHATSAPP_WEBHOOK_BATCH_SIZE,
        time_budget=settings.WHATSAPP_WEBHOOK_DRAIN_SECONDS,
        linger=settings.WHATSAPP_WEBHOOK_DRAIN_LINGER_SECONDS,
        linger_min=settings.WHATSAPP_WEBHOOK_DRAIN_LINGER_MIN_SECONDS,
    )


@shared_task(name="messaging.webhook_events_redrive", **queue_task_options(WEBHOOK))
def webhook_events_redrive_task() -> int:
    """Beat, every minute: pending events nobody is working on get drained."""
    return len(
        inbox.webhook_events_redrive(
            older_than=timedelta(
                seconds=settings.WHATSAPP_WEBHOOK_REDRIVE_AFTER_SECONDS
            ),
            limit=settings.WHATSAPP_WEBHOOK_REDRIVE_BATCH,
        )
    )


@shared_task(
    name=status_redrive.STATUSES_REDRIVE_TASK, **queue_task_options(MESSAGE_STATUS)
)
def statuses_redrive_after_broker_switch_task() -> int:
    """Beat, every minute: after a broker failover or restart, the statuses of
    the events processed just before it are published again."""
    return status_redrive.statuses_redrive_after_broker_switch()


@shared_task(
    name=services.MESSAGE_STATUSES_APPLY_TASK,
    bind=True,
    **queue_task_options(MESSAGE_STATUS),
)
def message_statuses_apply_task(self, salon_id: str, statuses: list[dict]) -> None:
    """A status can outrun the commit of our own outbound row: unknown wamids
    are retried with backoff, then kept as orphan statuses."""
    missing = services.message_statuses_apply(salon_id=salon_id, statuses=statuses)
    if not missing:
        return
    if MESSAGE_STATUS.may_retry(self.request.retries + 1):
        raise self.retry(
            kwargs={"salon_id": salon_id, "statuses": missing},
            countdown=MESSAGE_STATUS.retry_delay(self.request.retries),
        )
    services.orphan_statuses_store(salon_id=salon_id, statuses=missing)


@shared_task(
    name=outbound.MESSAGE_OUTBOUND_SEND_TASK, bind=True, **queue_task_options(OUTBOUND)
)
def message_outbound_send_task(self, message_id: str) -> None:
    try:
        outbound.message_outbound_deliver(
            message_id=message_id,
            final_attempt=not OUTBOUND.may_retry(self.request.retries + 1),
        )
    except SendDeferred as deferred:
        # The governor's wait is not a failed attempt.
        job_defer(self, countdown=deferred.retry_after, reason=str(deferred))


@shared_task(name="messaging.messages_outbound_redrive", **queue_task_options(OUTBOUND))
def messages_outbound_redrive_task() -> int:
    """Beat, every minute: outbound messages whose job never ran go back in."""
    return len(
        outbound.messages_outbound_redrive(
            older_than=timedelta(
                seconds=settings.WHATSAPP_OUTBOUND_REDRIVE_AFTER_SECONDS
            )
        )
    )


@shared_task(
    name=media.MESSAGE_MEDIA_DOWNLOAD_TASK, bind=True, **queue_task_options(MEDIA)
)
def message_media_download_task(self, message_id: str) -> None:
    media.message_media_download(
        message_id=message_id,
        final_attempt=not MEDIA.may_retry(self.request.retries + 1),
    )


@shared_task(name="messaging.messages_media_redrive", **queue_task_options(MEDIA))
def messages_media_redrive_task() -> int:
    """Beat, every minute: media downloads whose job never ran go back in."""
    return len(
        media.messages_media_redrive(
            older_than=timedelta(seconds=settings.WHATSAPP_MEDIA_REDRIVE_AFTER_SECONDS)
        )
    )


@shared_task(
    name=outbound.MESSAGE_TEST_SEND_TASK, bind=True, **queue_task_options(OUTBOUND)
)
def message_test_send_task(self, salon_id: str, to: str, text: str) -> str:
    """The operators' test job on whatsapp:outbound."""
    try:
        return outbound.message_test_send(salon_id=salon_id, to=to, text=text)
    except SendDeferred as deferred:
        # The governor's wait is not a failed attempt.
        job_defer(self, countdown=deferred.retry_after, reason=str(deferred))
