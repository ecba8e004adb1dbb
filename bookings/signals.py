"""Signals the booking services send after commit; cache invalidation listens.

Sent with ``transaction.on_commit(lambda: bookings_changed.send(...))`` by any
write that bulk-inserts or ``update()``s rows (which fire no post_save).
"""

from django.dispatch import Signal

#: kwargs: salon_id (UUID)
bookings_changed = Signal()
