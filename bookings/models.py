import uuid
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import (
    MaxValueValidator,
    MinValueValidator,
    RegexValidator,
)
from django.db import models


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA time zone.")


#: Meta's phone number ids are numeric (15-17 digits seen); digits only, so an id
#: can never turn the Graph API URL it goes into into another path.
validate_phone_number_id = RegexValidator(
    r"^[0-9]{10,20}\Z",
    "A WhatsApp phone number id is Meta's numeric id (10 to 20 digits), as shown "
    "in WhatsApp Manager.",
)


#: Uniqueness must be told, so a taken id is refused; the message says no more
#: than that (not whose, not since when), the same for a race and a sequential
#: duplicate. Enumerating ids costs one authenticated request each.
PHONE_NUMBER_ID_TAKEN = (
    "This WhatsApp phone number id is already connected. If the number is yours, "
    "contact support."
)


class Salon(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="salons"
    )
    name = models.CharField(max_length=200)
    whatsapp_phone_number_id = models.CharField(
        max_length=64,
        unique=True,
        validators=[validate_phone_number_id],
        error_messages={"unique": PHONE_NUMBER_ID_TAKEN},
        help_text="Meta's phone_number_id of the salon's WhatsApp Business number.",
    )
    whatsapp_claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who connected the current WhatsApp phone number id.",
    )
    whatsapp_claimed_at = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(
        max_length=64, default="UTC", validators=[validate_timezone]
    )
    language = models.CharField(
        max_length=16, default="en_US", help_text="Language of WhatsApp templates."
    )
    whatsapp_business_account_id = models.CharField(
        max_length=64,
        blank=True,
        db_index=True,
        help_text="Meta's WhatsApp Business Account id (WABA) the number belongs "
        "to: template status webhooks name the account, not the number.",
    )
    whatsapp_throughput_per_second = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Messages per second Meta allows this number when it was "
        "upgraded; empty: WHATSAPP_THROUGHPUT_PER_SECOND (80).",
    )
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["owner", "name"])]

    def __str__(self) -> str:
        return self.name

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class Booking(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        CONFIRMED = "confirmed"
        CANCELLED = "cancelled"
        COMPLETED = "completed"

    ACTIVE_STATUSES = (Status.PENDING, Status.CONFIRMED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    salon = models.ForeignKey(Salon, on_delete=models.CASCADE, related_name="bookings")
    customer_name = models.CharField(max_length=200)
    customer_phone = models.CharField(
        max_length=20, help_text="E.164, e.g. +15551234567"
    )
    customer_email = models.EmailField(blank=True)
    service_name = models.CharField(max_length=200)
    start_at = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["start_at"]
        indexes = [
            models.Index(fields=["salon", "start_at"]),
            models.Index(fields=["salon", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.customer_name}, {self.service_name}, {self.start_at:%Y-%m-%d}"

    @classmethod
    def from_db(cls, db, field_names, values):
        booking = super().from_db(db, field_names, values)
        # A save that moves the booking changes two salons' dashboards.
        booking.__dict__["_stored_salon_id"] = booking.__dict__.get("salon_id")
        return booking

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES


class BookingReminder(models.Model):
    """One reminder of a booking, scheduled in the database (never a broker ETA).

    Beat's dispatcher claims the due pending rows and queues them; the job sends
    and marks the row sent in the transaction that records the message.
    """

    class Kind(models.TextChoices):
        DAY_BEFORE = "day_before"
        HOUR_BEFORE = "hour_before"

    class Status(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        SENT = "sent"
        SKIPPED = "skipped"
        FAILED = "failed"

    booking = models.ForeignKey(
        Booking, on_delete=models.CASCADE, related_name="reminders"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    due_at = models.DateTimeField(help_text="When the reminder is meant to go out.")
    send_by = models.DateTimeField(
        help_text="Past this (half the lead time before the start) it is skipped."
    )
    booking_start_at = models.DateTimeField(
        help_text="The booking's start this reminder was scheduled for."
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    reason = models.CharField(
        max_length=255, blank=True, help_text="Why it was skipped or failed."
    )
    last_error = models.JSONField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    wamid = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["due_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["booking", "kind"], name="uniq_reminder_booking_kind"
            )
        ]
        indexes = [
            # The dispatcher's query: pending rows by due time.
            models.Index(
                fields=["due_at"],
                name="reminder_pending_due_idx",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["status", "due_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} reminder of {self.booking_id} ({self.status})"
