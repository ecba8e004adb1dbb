"""Writes for salons and bookings. Their reminders are bookings/reminders.py
(scheduling, dispatching) and bookings/reminder_sending.py (sending)."""

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.timezone import now as timezone_now

from bookings.cache import dashboard_cache_patch_on_commit
from bookings.dashboard_changes import BookingState
from bookings.models import PHONE_NUMBER_ID_TAKEN, Booking, Salon
from bookings.reminders import reminders_close, reminders_sync
from notifications.services import email_enqueue
from saas.services import model_save_validated
from saas.tenancy import salons_for

logger = logging.getLogger(__name__)

SALON_EDITABLE_FIELDS = (
    "name",
    "whatsapp_phone_number_id",
    "timezone",
    "language",
    "email",
    # Set by operators in the admin (the API's serializer does not carry them):
    # the account template webhooks name, and the rate Meta upgraded to.
    "whatsapp_business_account_id",
    "whatsapp_throughput_per_second",
)
BOOKING_EDITABLE_FIELDS = (
    "customer_name",
    "customer_phone",
    "customer_email",
    "service_name",
    "start_at",
    "status",
)


def phone_normalize(raw: str) -> str:
    """Return the E.164 form of ``raw`` or raise ValidationError."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        parsed = None
    if (
        parsed is None
        or not raw.startswith("+")
        or not phonenumbers.is_possible_number(parsed)
    ):
        raise ValidationError(
            {"customer_phone": "Enter a phone number in E.164 form, e.g. +15551234567."}
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# --- Salons -----------------------------------------------------------------


@transaction.atomic
def salon_create(
    *,
    owner,
    name: str,
    whatsapp_phone_number_id: str,
    timezone: str = "UTC",
    language: str = "en_US",
    email: str = "",
    whatsapp_business_account_id: str = "",
    whatsapp_throughput_per_second: int | None = None,
) -> Salon:
    """Create a salon and welcome its owner by e-mail."""
    salon = Salon(
        owner=owner,
        name=name,
        whatsapp_phone_number_id=whatsapp_phone_number_id,
        whatsapp_claimed_by=owner,
        whatsapp_claimed_at=timezone_now(),
        timezone=timezone,
        language=language,
        email=email,
        whatsapp_business_account_id=whatsapp_business_account_id,
        whatsapp_throughput_per_second=whatsapp_throughput_per_second,
    )
    model_save_validated(salon, integrity_errors=_DUPLICATE_PHONE_ID)
    recipient = owner.email or salon.email
    if recipient:
        email_enqueue(
            to=recipient,
            template="salon_welcome",
            data={
                "ownerName": owner.get_full_name() or owner.get_username(),
                "salonName": salon.name,
                "phoneNumberId": salon.whatsapp_phone_number_id,
            },
        )
    return salon


@transaction.atomic
def salon_update(*, salon: Salon, data: dict[str, Any], actor=None) -> Salon:
    """Change a salon's editable fields. Its WhatsApp number, once customers
    have written to it, moves only by staff: a tenant re-pointing a salon with
    conversations would receive another business's customers."""
    new_id = data.get("whatsapp_phone_number_id", salon.whatsapp_phone_number_id)
    if new_id != salon.whatsapp_phone_number_id:
        if salon.conversations.exists() and not getattr(actor, "is_staff", False):
            raise ValidationError(
                {
                    "whatsapp_phone_number_id": "This salon has conversations on its "
                    "WhatsApp number; ask support to move it to another number."
                }
            )
        salon.whatsapp_claimed_by = actor if getattr(actor, "pk", None) else None
        salon.whatsapp_claimed_at = timezone_now()
    for field_name in SALON_EDITABLE_FIELDS:
        if field_name in data:
            setattr(salon, field_name, data[field_name])
    model_save_validated(salon, integrity_errors=_DUPLICATE_PHONE_ID)
    return salon


_DUPLICATE_PHONE_ID = {"whatsapp_phone_number_id": PHONE_NUMBER_ID_TAKEN}


# --- Bookings ---------------------------------------------------------------


def booking_local_start(booking: Booking) -> str:
    """The start in the salon's time zone, as customers read it."""
    local = timezone.localtime(booking.start_at, booking.salon.tz)
    return f"{local:%A} {local.day} {local:%B %Y}, {local:%H:%M}"


def booking_email_data(booking: Booking) -> dict[str, str]:
    """Variables of the booking e-mails, in the seed's names."""
    return {
        "customerName": booking.customer_name,
        "serviceName": booking.service_name,
        "serviceDate": booking_local_start(booking),
        "salonName": booking.salon.name,
        "bookingId": str(booking.pk),
    }


def _booking_mail(booking: Booking, template: str) -> None:
    if booking.customer_email:
        email_enqueue(
            to=booking.customer_email,
            template=template,
            data=booking_email_data(booking),
        )


def _booking_write(
    booking: Booking, *, before: BookingState | None, fields: Sequence[str] = ()
) -> None:
    """Write a change from ``before`` (None: a new booking; else ``fields``)
    and have the cached dashboards patched with it after commit. Written
    without post_save, whose receiver would invalidate them instead (it is for
    the writes that bypass these services)."""
    if before is None:
        Booking.objects.bulk_create([booking])
    else:
        booking.updated_at = timezone.now()
        Booking.objects.filter(pk=booking.pk).update(
            **{name: getattr(booking, name) for name in [*fields, "updated_at"]}
        )
    owner_id = booking.salon.owner_id if Booking.salon.is_cached(booking) else None
    dashboard_cache_patch_on_commit(booking=booking, before=before, owner_id=owner_id)


def booking_check(booking: Booking, *, start_changed: bool) -> None:
    """The booking rules beyond field types; normalises the phone in place."""
    booking.customer_phone = phone_normalize(booking.customer_phone)
    if not booking.service_name.strip():
        raise ValidationError({"service_name": "Name the service."})
    if start_changed and booking.start_at <= timezone.now():
        raise ValidationError({"start_at": "The start must be in the future."})


@transaction.atomic
def booking_create(
    *,
    salon: Salon,
    customer_name: str,
    customer_phone: str,
    service_name: str,
    start_at: datetime,
    customer_email: str = "",
    status: str = Booking.Status.PENDING,
    actor=None,
) -> Booking:
    """Create a booking, its reminder rows and (with an e-mail) its confirmation.

    With ``actor``, the salon must be one the actor may see.
    """
    if actor is not None and not salons_for(actor).filter(pk=salon.pk).exists():
        raise ValidationError({"salon": "Unknown salon."})
    booking = Booking(
        salon=salon,
        customer_name=customer_name,
        customer_phone=customer_phone,
        customer_email=customer_email,
        service_name=service_name,
        start_at=start_at,
        status=status,
    )
    booking_check(booking, start_changed=True)
    booking.full_clean()
    _booking_write(booking, before=None)
    reminders_sync(booking=booking)
    if booking.is_active:
        _booking_mail(booking, "booking_confirmation")
    return booking


@transaction.atomic
def booking_update(*, booking: Booking, data: dict[str, Any]) -> Booking:
    """Apply ``data``; cancelling mails and stops reminders, a new start
    reschedules them, completing stops them."""
    if data.get("status") == Booking.Status.CANCELLED:
        booking = booking_cancel(booking=booking)
        data = {k: v for k, v in data.items() if k != "status"}
    # Locked so a reminder job (which locks it too) sees all or nothing.
    booking = Booking.objects.select_for_update(of=("self",)).get(pk=booking.pk)
    before = BookingState.of(booking)
    old_start, was_active = booking.start_at, booking.is_active
    for field_name in BOOKING_EDITABLE_FIELDS:
        if field_name in data:
            setattr(booking, field_name, data[field_name])
    start_changed = booking.start_at != old_start
    booking_check(booking, start_changed=start_changed)
    booking.full_clean()
    # metadata is the reminders' to write; never save a stale copy over it.
    _booking_write(booking, before=before, fields=BOOKING_EDITABLE_FIELDS)
    if not booking.is_active:
        reminders_close(booking=booking, reason=f"booking {booking.status}")
    elif start_changed or not was_active:
        reminders_sync(booking=booking, keep_sent=not start_changed)
    return booking


@transaction.atomic
def booking_cancel(*, booking: Booking) -> Booking:
    """Cancel, stop the reminders not yet sent, tell the customer by e-mail."""
    booking = Booking.objects.select_for_update(of=("self",)).get(pk=booking.pk)
    if booking.status == Booking.Status.CANCELLED:
        return booking
    if booking.status == Booking.Status.COMPLETED:
        raise ValidationError({"status": "A completed booking cannot be cancelled."})
    before = BookingState.of(booking)
    booking.status = Booking.Status.CANCELLED
    _booking_write(booking, before=before, fields=["status"])
    reminders_close(booking=booking, reason="booking cancelled")
    _booking_mail(booking, "booking_cancelled")
    return booking


@transaction.atomic
def booking_delete(*, booking: Booking) -> None:
    booking.delete()
