"""Cache keys owned by messaging: ``template:{id}`` and ``conversation:{id}``."""

from typing import Any

from messaging.models import Conversation, MessageTemplate
from saas.cache import cache_service

TEMPLATE_TTL = "TEMPLATE_CACHE_TTL_SECONDS"
CONVERSATION_TTL = "CONVERSATION_CACHE_TTL_SECONDS"


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
        "updated_at": _iso(template.updated_at),
    }


def _conversation_data(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.pk),
        "salon_id": str(conversation.salon_id),
        "customer_wa_id": conversation.customer_wa_id,
        "customer_name": conversation.customer_name,
        "customer_user_id": conversation.customer_user_id,
        "last_message_at": _iso(conversation.last_message_at),
        "last_inbound_at": _iso(conversation.last_inbound_at),
    }


def template_cached(template_id) -> dict[str, Any] | None:
    """The template's fields as plain JSON, read through ``template:{id}``."""

    def load() -> dict[str, Any] | None:
        template = MessageTemplate.objects.filter(pk=template_id).first()
        return _template_data(template) if template else None

    return cache_service.get_or_set(template_key(template_id), load, TEMPLATE_TTL)


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

    return cache_service.get_or_set(
        conversation_key(conversation_id), load, CONVERSATION_TTL
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
