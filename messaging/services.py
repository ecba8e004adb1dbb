"""Writes for conversations, messages and templates."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from bookings.models import Salon
from messaging.models import Conversation, MessageTemplate

TEMPLATE_EDITABLE_FIELDS = ("name", "language", "category", "body", "status")
_DUPLICATE_TEMPLATE = {"name": "This salon has a template with this name and language."}


def _template_save(template: MessageTemplate) -> MessageTemplate:
    template.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            template.save()
    except IntegrityError as exc:
        raise ValidationError(_DUPLICATE_TEMPLATE) from exc
    return template


@transaction.atomic
def template_create(
    *,
    salon: Salon,
    name: str,
    category: str,
    body: str,
    language: str = "en_US",
    status: str = MessageTemplate.Status.PENDING,
) -> MessageTemplate:
    template = MessageTemplate(
        salon=salon,
        name=name,
        language=language,
        category=category,
        body=body,
        status=status,
    )
    return _template_save(template)


@transaction.atomic
def template_update(
    *, template: MessageTemplate, data: dict[str, Any]
) -> MessageTemplate:
    for field in TEMPLATE_EDITABLE_FIELDS:
        if field in data:
            setattr(template, field, data[field])
    return _template_save(template)


@transaction.atomic
def template_delete(*, template: MessageTemplate) -> None:
    template.delete()


def wa_id_from_phone(phone: str) -> str:
    """WhatsApp ids are E.164 numbers without the plus sign."""
    return phone.lstrip("+")


def conversation_for_customer(
    *, salon: Salon, wa_id: str, name: str = "", user_id: str = ""
) -> Conversation:
    """The salon's conversation with this customer, created on first contact.

    Safe under concurrency: the (salon, customer_wa_id) unique constraint
    decides, not a check-then-insert.
    """
    defaults = {"customer_name": name, "customer_user_id": user_id}
    conversation, created = Conversation.objects.get_or_create(
        salon=salon, customer_wa_id=wa_id, defaults=defaults
    )
    changed = {
        field: value
        for field, value in defaults.items()
        if value and getattr(conversation, field) != value
    }
    if not created and changed:
        Conversation.objects.filter(pk=conversation.pk).update(**changed)
        for field, value in changed.items():
            setattr(conversation, field, value)
    return conversation
