"""Signals the booking services send after commit; cache invalidation listens.

Sent with ``transaction.on_commit(lambda: bookings_changed.send(...))`` by any
write that bulk-inserts or ``update()``s rows the dashboard counts (which fire
no post_save).
"""

from django.db import transaction
from django.dispatch import Signal

#: kwargs: salon_id (UUID)
bookings_changed = Signal()


def bookings_changed_on_commit(salon_id) -> None:
    transaction.on_commit(lambda: bookings_changed.send(sender=None, salon_id=salon_id))


# --- Receivers (connected in BookingsConfig.ready): they only invalidate caches,
# after commit, so a rolled-back write invalidates nothing.
def invalidate_for_booking(sender, instance, **kwargs) -> None:
    """A save or delete that bypassed the booking services (which patch the
    dashboards in place themselves) invalidates them."""
    from bookings.cache import dashboard_cache_invalidate_salon

    salon_id = instance.salon_id
    # The salon the row had when this instance read or last saved it.
    stored_salon_id = instance.__dict__.get("_stored_salon_id", salon_id)
    instance.__dict__["_stored_salon_id"] = salon_id
    owner_id = None
    if type(instance).salon.is_cached(instance):
        owner_id = instance.salon.owner_id

    def invalidate() -> None:
        dashboard_cache_invalidate_salon(salon_id=salon_id, owner_id=owner_id)
        if stored_salon_id not in (None, salon_id):
            dashboard_cache_invalidate_salon(salon_id=stored_salon_id)

    transaction.on_commit(invalidate, robust=True)


def invalidate_for_salon(sender, instance, **kwargs) -> None:
    from bookings.cache import dashboard_cache_invalidate_salon
    from bookings.salon_cache import salon_cache_invalidate

    salon_id, owner_id = instance.pk, instance.owner_id

    def invalidate() -> None:
        salon_cache_invalidate(salon_id)
        dashboard_cache_invalidate_salon(salon_id=salon_id, owner_id=owner_id)

    transaction.on_commit(invalidate, robust=True)


def invalidate_for_bookings_changed(sender, salon_id, **kwargs) -> None:
    from bookings.cache import dashboard_cache_invalidate_salon

    transaction.on_commit(
        lambda: dashboard_cache_invalidate_salon(salon_id=salon_id), robust=True
    )
