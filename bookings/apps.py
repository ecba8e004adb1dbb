from django.apps import AppConfig


class BookingsConfig(AppConfig):
    name = "bookings"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from bookings import signals
        from bookings.models import Booking, Salon

        for model, receiver in (
            (Booking, signals.invalidate_for_booking),
            (Salon, signals.invalidate_for_salon),
        ):
            for signal, suffix in ((post_save, "save"), (post_delete, "delete")):
                signal.connect(
                    receiver,
                    sender=model,
                    dispatch_uid=f"cache:{model.__name__}:{suffix}",
                )
        signals.bookings_changed.connect(
            signals.invalidate_for_bookings_changed, dispatch_uid="cache:bookings"
        )
