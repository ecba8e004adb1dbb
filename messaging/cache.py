"""Cache keys owned by messaging: ``template:{id}`` and ``conversation:{id}``,
read on the API's retrieve of each; who may see one is its salon's owner
(``salon:{id}``) and staff."""

from datetime import datetime
from typing import Any
from uuid import UUID

from bookings.salon_cache import salon_owner_id_cached
from messaging.models import Conversation, MessageTemplate
from saas.cache import cache_service
from saas.tenancy import may_see_salon_of

TEMPLATE_TTL = "TEMPLATE_CACHE_TTL_SECONDS"
CONVERSATION_TTL = "CONVERSATION_CACHE_TTL_SECONDS"
#: What a stored value holds; one stored without them is computed again.
TEMPLATE_FIELDS = ("id", "salon_id", "name", "language", "category", "body")
TEMPLATE_FIELDS += ("status", "created_at", "updated_at")
CONVERSATION_FIELDS = ("id", "salon_id", "customer_wa_id", "customer_name")
CONVERSATION_FIELDS += ("customer_user_id", "last_message_at", "last_inbound_at")
CONVERSATION_FIELDS += ("customer_username", "customer_parent_user_id")


def template_key(template_id) -> str:
    return f"template:{template_id}"


def conversation_key(conversation_id) -> str:
    return f"conversation:{conversation_id}"


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _template_data(template: MessageTemplate) -> dict[str, Any]:
    return {
        "id": str(template.pk),
        "salon_id": str(template.salon_id),
        "name": template.name,
        "language": template.language,
        "category": template.category,
        "body": template.body,
        "status": template.status,
        "created_at": _iso(template.created_at),
        "updated_at": _iso(template.updated_at),
    }


def _conversation_data(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.pk),
        "salon_id": str(conversation.salon_id),
        "customer_wa_id": conversation.customer_wa_id,
        "customer_name": conversation.customer_name,
        "customer_user_id": conversation.customer_user_id,
        "customer_username": conversation.customer_username,
        "customer_parent_user_id": conversation.customer_parent_user_id,
        "last_message_at": _iso(conversation.last_message_at),
        "last_inbound_at": _iso(conversation.last_inbound_at),
    }


def template_cached(template_id) -> dict[str, Any] | None:
    """The template's fields as plain JSON, read through ``template:{id}``."""

    def load() -> dict[str, Any] | None:
        template = MessageTemplate.objects.filter(pk=template_id).first()
        return _template_data(template) if template else None

    return cache_service.get_or_set_with(
        template_key(template_id), load, TEMPLATE_TTL, fields=TEMPLATE_FIELDS
    )


def template_cache_get(template_id) -> dict[str, Any] | None:
    return cache_service.get(template_key(template_id))


def template_cache_set(template: MessageTemplate) -> None:
    cache_service.set(template_key(template.pk), _template_data(template), TEMPLATE_TTL)


def template_cache_invalidate(template_id) -> None:
    cache_service.invalidate(template_key(template_id))


def conversation_cached(conversation_id) -> dict[str, Any] | None:
    """The conversation's fields as plain JSON, read through ``conversation:{id}``."""

    def load() -> dict[str, Any] | None:
        conversation = Conversation.objects.filter(pk=conversation_id).first()
        return _conversation_data(conversation) if conversation else None

    return cache_service.get_or_set_with(
        conversation_key(conversation_id),
        load,
        CONVERSATION_TTL,
        fields=CONVERSATION_FIELDS,
    )


def conversation_cache_get(conversation_id) -> dict[str, Any] | None:
    return cache_service.get(conversation_key(conversation_id))


def conversation_cache_set(conversation: Conversation) -> None:
    cache_service.set(
        conversation_key(conversation.pk),
        _conversation_data(conversation),
        CONVERSATION_TTL,
    )


def conversation_cache_invalidate(*conversation_ids) -> None:
    cache_service.invalidate(*(conversation_key(pk) for pk in conversation_ids))


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _visible(user, data: dict[str, Any] | None) -> bool:
    if data is None:
        return False
    if user.is_staff:
        return True
    owner_id = salon_owner_id_cached(data["salon_id"])
    return may_see_salon_of(user, owner_id=owner_id)


def template_cached_for(*, user, template_id) -> MessageTemplate | None:
    """The template as the API shows it, from the cache without SQL once
    cached; None if there is none or ``user`` may not see it."""
    data = template_cached(template_id)
    if not _visible(user, data):
        return None
    return MessageTemplate(
        **{name: data[name] for name in TEMPLATE_FIELDS[2:7]},
        id=UUID(data["id"]),
        salon_id=UUID(data["salon_id"]),
        created_at=_time(data["created_at"]),
        updated_at=_time(data["updated_at"]),
    )


def conversation_cached_for(*, user, conversation_id) -> Conversation | None:
    """The conversation as the API shows it, from the cache without SQL once
    cached; None if there is none or ``user`` may not see it."""
    data = conversation_cached(conversation_id)
    if not _visible(user, data):
        return None
    return Conversation(
        **{name: data[name] for name in CONVERSATION_FIELDS[2:5]},
        **{name: data[name] for name in CONVERSATION_FIELDS[7:]},
        id=UUID(data["id"]),
        salon_id=UUID(data["salon_id"]),
        last_message_at=_time(data["last_message_at"]),
        last_inbound_at=_time(data["last_inbound_at"]),
    )
