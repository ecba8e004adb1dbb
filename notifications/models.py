import uuid

from django.db import models


class EmailLog(models.Model):
    """One e-mail job: what was asked, and what became of it."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        SENT = "sent"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    template = models.CharField(max_length=64)
    to = models.CharField(max_length=254, help_text="Recipient, as the job gave it.")
    subject = models.CharField(max_length=255, blank=True)
    data = models.JSONField(default=dict, blank=True)
    priority = models.PositiveSmallIntegerField(default=7)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    redriven_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time beat queued it again."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"]),
            models.Index(fields=["template", "-created_at"]),
            models.Index(fields=["to"]),
        ]

    def __str__(self) -> str:
        return f"{self.template} to {self.to} ({self.status})"
