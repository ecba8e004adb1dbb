"""``salon:{id}``: a salon's fields as plain JSON (SALON_CACHE_TTL_SECONDS).

Read on the API's salon retrieve, and for the owner of a salon when the
messaging caches check who may see a template or a conversation. Every save
or delete of a salon invalidates it after commit (bookings/signals.py).
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from bookings.models import Salon
from saas.cache import cache_service
from saas.tenancy import may_see_salon_of

SALON_TTL = "SALON_CACHE_TTL_SECONDS"
#: What a stored value holds; one stored without them is computed again.
SALON_FIELDS = (
    "id",
    "owner_id",
    "name",
    "whatsapp_phone_number_id",
    "timezone",
    "language",
    "email",
    "created_at",
    "updated_at",
)


def salon_key(salon_id) -> str:
    return f"salon:{salon_id}"


def _salon_data(salon: Salon) -> dict[str, Any]:
    return {
        "id": str(salon.pk),
        "owner_id": salon.owner_id,
        "name": salon.name,
        "whatsapp_phone_number_id": salon.whatsapp_phone_number_id,
        "timezone": salon.timezone,
        "language": salon.language,
        "email": salon.email,
        "created_at": salon.created_at.isoformat(),
        "updated_at": salon.updated_at.isoformat(),
    }


def salon_cached(salon_id) -> dict[str, Any] | None:
    """The salon's fields as plain JSON, read through ``salon:{id}``."""

    def load() -> dict[str, Any] | None:
        salon = Salon.objects.filter(pk=salon_id).first()
        return _salon_data(salon) if salon else None

    return cache_service.get_or_set_with(
        salon_key(salon_id), load, SALON_TTL, fields=SALON_FIELDS
    )


def salon_cache_get(salon_id) -> dict[str, Any] | None:
    return cache_service.get(salon_key(salon_id))


def salon_cache_set(salon: Salon) -> None:
    cache_service.set(salon_key(salon.pk), _salon_data(salon), SALON_TTL)


def salon_cache_invalidate(salon_id) -> None:
    cache_service.invalidate(salon_key(salon_id))


def salon_owner_id_cached(salon_id) -> int | None:
    """The salon's owner, read through ``salon:{id}`` (None: no such salon)."""
    data = salon_cached(salon_id)
    return data["owner_id"] if data else None


def salon_cached_for(*, user, salon_id) -> Salon | None:
    """The salon as the API shows it, from ``salon:{id}`` without SQL once
    cached; None if there is none or ``user`` may not see it."""
    data = salon_cached(salon_id)
    if data is None or not may_see_salon_of(user, owner_id=data["owner_id"]):
        return None
    return Salon(
        **{name: data[name] for name in SALON_FIELDS[2:7]},
        id=UUID(data["id"]),
        owner_id=data["owner_id"],
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )
