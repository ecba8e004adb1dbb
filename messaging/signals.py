"""Signals the messaging services send after commit; cache invalidation listens.

Sent with ``transaction.on_commit(lambda: messages_changed.send(...))`` by any
write that bulk-inserts or ``update()``s rows (which fire no post_save).
"""

from django.db import transaction
from django.dispatch import Signal

#: kwargs: salon_id (UUID), conversation_ids (iterable of UUIDs)
messages_changed = Signal()


# --- Receivers (connected in MessagingConfig.ready): they only invalidate caches,
# after commit, so a rolled-back write invalidates nothing.
def invalidate_for_message(sender, instance, **kwargs) -> None:
    from bookings.cache import dashboard_cache_invalidate_salon
    from messaging.cache import conversation_cache_invalidate

    salon_id, conversation_id = instance.salon_id, instance.conversation_id

    def invalidate() -> None:
        conversation_cache_invalidate(conversation_id)
        dashboard_cache_invalidate_salon(salon_id=salon_id)

    transaction.on_commit(invalidate, robust=True)


def invalidate_for_conversation(sender, instance, created=True, **kwargs) -> None:
    """A new or deleted conversation changes the dashboard; any change, its key."""
    from bookings.cache import dashboard_cache_invalidate_salon
    from messaging.cache import conversation_cache_invalidate

    salon_id, conversation_id = instance.salon_id, instance.pk

    def invalidate() -> None:
        conversation_cache_invalidate(conversation_id)
        if created:
            dashboard_cache_invalidate_salon(salon_id=salon_id)

    transaction.on_commit(invalidate, robust=True)


def invalidate_for_template(sender, instance, **kwargs) -> None:
    from messaging.cache import template_cache_invalidate

    template_id = instance.pk
    transaction.on_commit(lambda: template_cache_invalidate(template_id), robust=True)


def invalidate_for_messages_changed(
    sender, salon_id, conversation_ids=(), **kwargs
) -> None:
    from bookings.cache import dashboard_cache_invalidate_salon
    from messaging.cache import conversation_cache_invalidate

    conversation_ids = list(conversation_ids or ())

    def invalidate() -> None:
        conversation_cache_invalidate(*conversation_ids)
        dashboard_cache_invalidate_salon(salon_id=salon_id)

    transaction.on_commit(invalidate, robust=True)
