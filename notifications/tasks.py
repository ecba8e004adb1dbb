from celery import shared_task

from notifications import services
from queues.definitions import EMAIL, queue_task_options


@shared_task(name="notifications.email_send", **queue_task_options(EMAIL))
def email_send(data: dict, log_id: str | None = None) -> str:
    """Render and send one e-mail job (the seed's job data)."""
    return services.email_deliver(job=data, log_id=log_id).status
