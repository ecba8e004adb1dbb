"""Writes for conversations, messages and templates."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from bookings.models import Salon
from messaging.models import MessageTemplate

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
