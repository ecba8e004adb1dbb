"""What a reminder says and how it goes: the salon's approved template in
Meta's language order, else free text inside the customer-service window."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings

from bookings.models import Booking
from bookings.services import booking_local_start
from messaging.governed_sending import GovernedSend, salon_rate
from messaging.selectors import customer_service_window_open, template_for_language
from messaging.whatsapp import whatsapp_client


def _template_fill(body: str, parameters: list[str]) -> str:
    for number, value in enumerate(parameters, start=1):
        body = body.replace(f"{{{{{number}}}}}", value)
    return body


@dataclass
class ReminderOutbound:
    type: str
    body: str
    content: dict[str, Any]
    send: GovernedSend
    #: What the booking's metadata records: the template and language used.
    template: dict[str, str] | None = None


def reminder_outbound(
    booking: Booking,
    *,
    wa_id: str,
    now: datetime,
    key: Any = None,
    templates: dict | None = None,
) -> ReminderOutbound | str:
    """What to send: the approved template (the salon's language, its base or
    regional form, else the only approved language), else free text inside the
    customer-service window; a reason string when neither is possible."""
    salon = booking.salon
    client = whatsapp_client()
    parameters = [
        booking.customer_name,
        booking.service_name,
        booking_local_start(booking),
    ]
    phone_number_id = salon.whatsapp_phone_number_id
    name = settings.WHATSAPP_REMINDER_TEMPLATE
    templates = {} if templates is None else templates  # one lookup per salon
    if salon.pk not in templates:
        templates[salon.pk] = template_for_language(
            salon=salon, name=name, language=salon.language
        )
    template = templates[salon.pk]
    if template is not None:
        language = template.language
        return ReminderOutbound(
            type="template",
            body=_template_fill(template.body, parameters),
            content={
                "template": {
                    "name": name,
                    "language": language,
                    "parameters": parameters,
                }
            },
            send=GovernedSend(
                phone_number_id=phone_number_id,
                recipient=wa_id,
                rate=salon_rate(salon),
                key=key,
                call=lambda: client.send_template(
                    phone_number_id=phone_number_id,
                    to=wa_id,
                    name=name,
                    language=language,
                    parameters=parameters,
                ),
            ),
            template={"name": name, "language": language},
        )
    if customer_service_window_open(salon_id=salon.pk, wa_id=wa_id, now=now):
        text = (
            f"Hi {parameters[0]}, a reminder of your {parameters[1]} at "
            f"{salon.name} on {parameters[2]}."
        )
        return ReminderOutbound(
            type="text",
            body=text,
            content={},
            send=GovernedSend(
                phone_number_id=phone_number_id,
                recipient=wa_id,
                rate=salon_rate(salon),
                key=key,
                call=lambda: client.send_text(
                    phone_number_id=phone_number_id, to=wa_id, body=text
                ),
            ),
        )
    return (
        f"no approved WhatsApp template {name!r} ({salon.language}) and the "
        "customer has not written in the last 24 hours (Meta refuses free text "
        "then)"
    )
