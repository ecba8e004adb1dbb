from django.db.models import QuerySet

from messaging.models import Conversation, Message, MessageTemplate
from saas.tenancy import scope_to_user


def conversation_list(*, user, salon_id=None) -> QuerySet[Conversation]:
    conversations = scope_to_user(Conversation.objects.all(), user, salon_path="salon")
    if salon_id:
        conversations = conversations.filter(salon_id=salon_id)
    return conversations.order_by("-last_message_at", "-created_at")


def message_list(*, user, conversation_id=None) -> QuerySet[Message]:
    messages = scope_to_user(Message.objects.all(), user, salon_path="salon")
    if conversation_id:
        messages = messages.filter(conversation_id=conversation_id)
    return messages.order_by("created_at")


def template_list(*, user, salon_id=None) -> QuerySet[MessageTemplate]:
    templates = scope_to_user(MessageTemplate.objects.all(), user, salon_path="salon")
    if salon_id:
        templates = templates.filter(salon_id=salon_id)
    return templates
