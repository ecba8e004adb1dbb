from django.db.models import QuerySet

from bookings.models import Booking, Salon
from saas.tenancy import salons_for, scope_to_user


def salon_list(*, user) -> QuerySet[Salon]:
    return salons_for(user)


def booking_list(
    *, user, salon_id=None, status: str | None = None
) -> QuerySet[Booking]:
    bookings = scope_to_user(
        Booking.objects.select_related("salon"), user, salon_path="salon"
    )
    if salon_id:
        bookings = bookings.filter(salon_id=salon_id)
    if status:
        bookings = bookings.filter(status=status)
    return bookings
