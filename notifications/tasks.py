from datetime import timedelta

from celery import shared_task
from django.conf import settings

from notifications import services
from queues.definitions import EMAIL, queue_task_options


@shared_task(name=services.EMAIL_SEND_TASK, **queue_task_options(EMAIL))
def email_send(data: dict, log_id: str | None = None) -> str:
    """Render and send one e-mail job (the seed's job data)."""
    return services.email_deliver(job=data, log_id=log_id).status


@shared_task(name="notifications.emails_redrive", **queue_task_options(EMAIL))
def emails_redrive() -> int:
    """Beat, every minute: queued e-mails whose job never ran go back in."""
    return len(
        services.emails_redrive(
            older_than=timedelta(seconds=settings.EMAIL_REDRIVE_AFTER_SECONDS),
            limit=settings.EMAIL_REDRIVE_BATCH,
        )
    )
