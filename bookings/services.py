"""Writes for salons and bookings. Every rule lives here, not in views."""

from datetime import datetime
from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from bookings.models import Booking, Salon

SALON_EDITABLE_FIELDS = (
    "name",
    "whatsapp_phone_number_id",
    "timezone",
    "language",
    "email",
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


def _save(instance, *, unique_field_errors: dict[str, str]) -> None:
    instance.full_clean()
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as exc:  # lost a race with a concurrent insert
        raise ValidationError(unique_field_errors) from exc


@transaction.atomic
def salon_create(
    *,
    owner,
    name: str,
    whatsapp_phone_number_id: str,
    timezone: str = "UTC",
    language: str = "en_US",
    email: str = "",
) -> Salon:
    salon = Salon(
        owner=owner,
        name=name,
        whatsapp_phone_number_id=whatsapp_phone_number_id,
        timezone=timezone,
        language=language,
        email=email,
    )
    _save(salon, unique_field_errors=_DUPLICATE_PHONE_ID)
    return salon


@transaction.atomic
def salon_update(*, salon: Salon, data: dict[str, Any]) -> Salon:
    for field in SALON_EDITABLE_FIELDS:
        if field in data:
            setattr(salon, field, data[field])
    _save(salon, unique_field_errors=_DUPLICATE_PHONE_ID)
    return salon


_DUPLICATE_PHONE_ID = {
    "whatsapp_phone_number_id": "A salon with this WhatsApp phone number id exists."
}


def _validate_booking(booking: Booking, *, start_changed: bool) -> None:
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
) -> Booking:
    booking = Booking(
        salon=salon,
        customer_name=customer_name,
        customer_phone=customer_phone,
        customer_email=customer_email,
        service_name=service_name,
        start_at=start_at,
        status=status,
    )
    _validate_booking(booking, start_changed=True)
    booking.full_clean()
    booking.save()
    return booking


@transaction.atomic
def booking_update(*, booking: Booking, data: dict[str, Any]) -> Booking:
    if data.get("status") == Booking.Status.CANCELLED:
        booking = booking_cancel(booking=booking)
        data = {k: v for k, v in data.items() if k != "status"}
    old_start = booking.start_at
    for field in BOOKING_EDITABLE_FIELDS:
        if field in data:
            setattr(booking, field, data[field])
    _validate_booking(booking, start_changed=booking.start_at != old_start)
    booking.full_clean()
    booking.save()
    return booking


@transaction.atomic
def booking_cancel(*, booking: Booking) -> Booking:
    booking = Booking.objects.select_for_update().get(pk=booking.pk)
    if booking.status == Booking.Status.CANCELLED:
        return booking
    if booking.status == Booking.Status.COMPLETED:
        raise ValidationError({"status": "A completed booking cannot be cancelled."})
    booking.status = Booking.Status.CANCELLED
    booking.save(update_fields=["status", "updated_at"])
    return booking


@transaction.atomic
def booking_delete(*, booking: Booking) -> None:
    booking.delete()
