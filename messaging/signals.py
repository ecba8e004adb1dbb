"""Signals the messaging services send after commit; cache invalidation listens.

Sent with ``transaction.on_commit(lambda: messages_changed.send(...))`` by any
write that bulk-inserts or ``update()``s rows (which fire no post_save).
"""

from django.dispatch import Signal

#: kwargs: salon_id (UUID), conversation_ids (iterable of UUIDs)
messages_changed = Signal()
