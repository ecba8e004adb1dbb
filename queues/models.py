from django.conf import settings
from django.db import models


class QueueAction(models.Model):
    """Who paused, resumed, cleaned, retried or removed what, and when."""

    class Action(models.TextChoices):
        PAUSE = "pause"
        RESUME = "resume"
        CLEAN = "clean"
        RETRY = "retry"
        RETRY_FAILED = "retry_failed"
        REMOVE = "remove"
        TEST = "test"
        EDIT_RETRY = "edit_retry"
        REDRIVE = "redrive"

    action = models.CharField(max_length=20, choices=Action.choices)
    queue = models.CharField(max_length=64)
    job_id = models.CharField(max_length=64, blank=True)
    count = models.PositiveIntegerField(default=0)
    detail = models.CharField(max_length=200, blank=True)
    params = models.JSONField(
        default=dict,
        blank=True,
        help_text="A re-drive's filter, or an edited job's original data.",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    actor_name = models.CharField(
        max_length=150, help_text="User name, or the operator's command."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        # The queue page's and API's two roles (queues/permissions.py).
        permissions = [
            ("view_queues", "Can view queues, jobs and health"),
            (
                "operate_queues",
                "Can pause, resume, clean, retry, remove, re-drive and test",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.queue} {self.job_id}".strip()
