from datetime import datetime, timedelta

from django.core.files.storage import default_storage
from django.db.models import QuerySet

from messaging.models import Conversation, Message, MessageTemplate
from saas.tenancy import scope_to_user

#: Meta accepts free text only this long after the customer's last message.
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)


def window_is_open(last_inbound_at: datetime | None, *, now: datetime) -> bool:
    """Whether free text may be sent ``now``: the one rule of the 24-hour
    customer-service window."""
    return last_inbound_at is not None and now - last_inbound_at < (
        CUSTOMER_SERVICE_WINDOW
    )


def customer_service_window_open(*, salon_id, wa_id: str, now: datetime) -> bool:
    last_inbound_at = (
        Conversation.objects.filter(salon_id=salon_id, customer_wa_id=wa_id)
        .values_list("last_inbound_at", flat=True)
        .first()
    )
    return window_is_open(last_inbound_at, now=now)


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


def template_approved(*, salon, name: str, language: str) -> MessageTemplate | None:
    """The salon's approved template of this name and language, if any."""
    return MessageTemplate.objects.filter(
        salon=salon,
        name=name,
        language=language,
        status=MessageTemplate.Status.APPROVED,
    ).first()


def _language_base(language: str) -> str:
    return language.replace("-", "_").split("_")[0]


def template_for_language(*, salon, name: str, language: str) -> MessageTemplate | None:
    """The approved template of this name to send in ``language``, in Meta's
    order: the salon's language; the same language's base (``en`` for
    ``en_US``) or, for a base, one of its regional forms (``en_US`` for
    ``en``); then the only approved language of that name. Paused, disabled,
    rejected and pending templates are never chosen. One query."""
    approved = {
        template.language: template
        for template in MessageTemplate.objects.filter(
            salon=salon, name=name, status=MessageTemplate.Status.APPROVED
        )
    }
    if language in approved:
        return approved[language]
    base = _language_base(language)
    if base != language and base in approved:
        return approved[base]
    regional = sorted(
        code for code in approved if code != base and _language_base(code) == base
    )
    if base == language and regional:
        return approved[regional[0]]
    if len(approved) == 1:
        return next(iter(approved.values()))
    return None


def media_open(*, message: Message):
    """The stored media file of a message, opened for reading; None if the
    message has none (not media, not downloaded yet, refused, or missing)."""
    if message.media_status != Message.MediaStatus.STORED or not message.media_file:
        return None
    try:
        return default_storage.open(message.media_file.name, "rb")
    except (FileNotFoundError, OSError):
        return None
