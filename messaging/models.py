import uuid

from django.db import models

from bookings.models import Salon


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    salon = models.ForeignKey(
        Salon, on_delete=models.CASCADE, related_name="conversations"
    )
    customer_wa_id = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text="The customer's phone number (WhatsApp id); empty while the "
        "customer hides it behind a username.",
    )
    customer_name = models.CharField(max_length=200, blank=True)
    customer_user_id = models.CharField(
        max_length=140, blank=True, help_text="Meta's business-scoped user id (BSUID)."
    )
    customer_parent_user_id = models.CharField(
        max_length=140, blank=True, help_text="Meta's parent BSUID (US.ENT....)."
    )
    customer_username = models.CharField(max_length=100, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_inbound_at = models.DateTimeField(
        null=True, blank=True, help_text="Opens Meta's 24-hour customer-service window."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-last_message_at"]
        constraints = [
            # One conversation per customer per salon, whichever identifier
            # came first: the constraints decide, under any concurrency.
            models.UniqueConstraint(
                fields=["salon", "customer_wa_id"],
                condition=~models.Q(customer_wa_id=""),
                name="uniq_conversation_customer",
            ),
            models.UniqueConstraint(
                fields=["salon", "customer_user_id"],
                condition=~models.Q(customer_user_id=""),
                name="uniq_conversation_customer_user_id",
            ),
            models.CheckConstraint(
                condition=~models.Q(customer_wa_id="", customer_user_id=""),
                name="conversation_has_customer_id",
            ),
        ]
        indexes = [models.Index(fields=["salon", "-last_message_at"])]

    def __str__(self) -> str:
        return f"{self.customer_label} ({self.salon})"

    @property
    def customer_label(self) -> str:
        return (
            self.customer_name
            or self.customer_username
            or self.customer_wa_id
            or self.customer_user_id
        )


class Message(models.Model):
    class Direction(models.TextChoices):
        INBOUND = "in"
        OUTBOUND = "out"

    class Status(models.TextChoices):
        RECEIVED = "received"
        QUEUED = "queued"
        SENT = "sent"
        DELIVERED = "delivered"
        READ = "read"
        FAILED = "failed"

    class MediaStatus(models.TextChoices):
        NONE = "", "no media"
        PENDING = "pending"
        STORED = "stored"
        REFUSED = "refused"
        GONE = "gone"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    salon = models.ForeignKey(Salon, on_delete=models.CASCADE, related_name="messages")
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    wamid = models.CharField(max_length=255, unique=True, null=True, blank=True)
    direction = models.CharField(max_length=3, choices=Direction.choices)
    type = models.CharField(max_length=32, default="text")
    body = models.TextField(blank=True)
    content = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the type carries: media id and mime type, location, "
        "button reply id and title, reaction emoji, template name...",
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    error = models.JSONField(null=True, blank=True)
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    reaction_to = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reactions",
        help_text="For a reaction: the message it reacts to.",
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    redriven_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="An outbound message still queued was queued again by beat.",
    )
    media_status = models.CharField(
        max_length=16, choices=MediaStatus.choices, blank=True, default=""
    )
    media_file = models.FileField(max_length=255, blank=True)
    media_mime_type = models.CharField(max_length=100, blank=True)
    media_size = models.BigIntegerField(null=True, blank=True)
    media_sha256 = models.CharField(max_length=64, blank=True)
    media_error = models.TextField(
        blank=True, help_text="Why the media was refused, is gone or failed."
    )

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["conversation", "created_at"]),
            models.Index(fields=["salon", "direction", "status"]),
            models.Index(
                fields=["created_at"],
                condition=models.Q(direction="out", status="queued"),
                name="message_outbound_queued_idx",
            ),
            models.Index(
                fields=["created_at"],
                condition=models.Q(media_status="pending"),
                name="message_media_pending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.type} {self.wamid or self.id}"


class MessageTemplate(models.Model):
    class Category(models.TextChoices):
        MARKETING = "marketing"
        UTILITY = "utility"
        AUTHENTICATION = "authentication"

    class Status(models.TextChoices):
        APPROVED = "approved"
        PENDING = "pending"
        REJECTED = "rejected"
        PAUSED = "paused"
        DISABLED = "disabled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    salon = models.ForeignKey(Salon, on_delete=models.CASCADE, related_name="templates")
    name = models.CharField(max_length=512)
    language = models.CharField(max_length=16, default="en_US")
    category = models.CharField(max_length=16, choices=Category.choices)
    body = models.TextField(help_text="Text with {{1}}, {{2}}... placeholders.")
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING
    )
    status_reason = models.CharField(
        max_length=255,
        blank=True,
        help_text="Meta's reason with its last status update (rejection, pause).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["salon", "name", "language"], name="uniq_template_name_language"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.language})"


class WebhookEvent(models.Model):
    """Meta's webhook bodies, stored before they are acknowledged (the inbox).

    An event is never lost: one whose enqueue failed, or whose job died, stays
    pending and is re-driven by beat.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSED = "processed"
        IGNORED = "ignored"
        FAILED = "failed"
        # Claimed by too many drains that never finished it (the worker died
        # on it): set aside for an operator, re-drivable from the queue page.
        QUARANTINED = "quarantined"

    received_at = models.DateTimeField(db_index=True)
    body = models.TextField(help_text="The raw body, exactly as signed by Meta.")
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    redriven_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["received_at"]
        indexes = [
            models.Index(
                fields=["received_at"],
                condition=models.Q(status="pending"),
                name="webhookevent_pending_idx",
            )
        ]

    def __str__(self) -> str:
        return f"webhook {self.pk} {self.status} ({self.received_at:%Y-%m-%d %H:%M:%S})"


class OrphanStatus(models.Model):
    """A delivery status for a wamid we never stored; kept, never turned into an
    invented message. Applied if the message shows up later."""

    salon = models.ForeignKey(
        Salon, on_delete=models.CASCADE, related_name="orphan_statuses"
    )
    wamid = models.CharField(max_length=255, db_index=True)
    status = models.CharField(max_length=16)
    timestamp = models.DateTimeField(null=True, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["wamid", "status"], name="uniq_orphan_status"
            )
        ]
        verbose_name_plural = "orphan statuses"

    def __str__(self) -> str:
        return f"{self.status} for {self.wamid}"
