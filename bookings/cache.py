"""Cache keys owned by bookings: the dashboard and salons.

The dashboard's keys are ``dashboard:stats:{userId}:{salonId?}``. Its viewers
(the owner, every staff member, per salon and over all salons) cannot be listed
cheaply, so a write does not delete their keys: it gives new versions to the
three version keys their values are tagged with (the salon's, its owner's, and
the global one staff's all-salons view uses). O(1) per write, no KEYS or SCAN.
"""

import functools
import uuid
from typing import Any

from bookings.models import Salon
from bookings.selectors import dashboard_stats
from saas.cache import Fetched, cache_service

DASHBOARD_TTL = "DASHBOARD_CACHE_TTL_SECONDS"
SALON_TTL = "SALON_CACHE_TTL_SECONDS"


def dashboard_key(user_id, salon_id=None) -> str:
    return f"dashboard:stats:{user_id}:{salon_id or ''}"


def dashboard_version_key(user, salon_id=None) -> str:
    """The version key a viewer's dashboard value is tagged with."""
    if salon_id:
        return f"dashboard:version:salon:{salon_id}"
    if user.is_staff:
        return "dashboard:version:all"
    return f"dashboard:version:owner:{user.pk}"


def _dashboard_scope(user) -> str:
    return "staff" if user.is_staff else "owner"


def dashboard_stats_cached(*, user, salon_id: uuid.UUID | None = None) -> Fetched:
    """The dashboard read through the cache; ``.hit`` says whether it was cached."""
    scope = _dashboard_scope(user)
    fetched = cache_service.fetch(
        dashboard_key(user.pk, salon_id),
        lambda: {
            "scope": scope,
            "stats": dashboard_stats(user=user, salon_id=salon_id),
        },
        DASHBOARD_TTL,
        version_key=dashboard_version_key(user, salon_id),
    )
    if fetched.value["scope"] == "staff" and scope != "staff":
        # Computed while this user was staff: their rights have shrunk since.
        return Fetched(dashboard_stats(user=user, salon_id=salon_id), hit=False)
    return Fetched(fetched.value["stats"], hit=fetched.hit)


def dashboard_cache_get(*, user, salon_id=None) -> dict[str, Any] | None:
    value = cache_service.get_versioned(
        dashboard_key(user.pk, salon_id), dashboard_version_key(user, salon_id)
    )
    if value is None or (value["scope"] == "staff" and not user.is_staff):
        return None
    return value["stats"]


def dashboard_cache_set(*, user, stats: dict[str, Any], salon_id=None) -> None:
    cache_service.set_versioned(
        dashboard_key(user.pk, salon_id),
        {"scope": _dashboard_scope(user), "stats": stats},
        DASHBOARD_TTL,
        version_key=dashboard_version_key(user, salon_id),
    )


def dashboard_cache_invalidate(*, user_id, salon_id=None) -> None:
    """One viewer's key. Writes use dashboard_cache_invalidate_salon."""
    cache_service.invalidate(dashboard_key(user_id, salon_id))


@functools.lru_cache(maxsize=65536)
def _salon_owner_id(salon_id: uuid.UUID) -> int | None:
    # A salon never changes owner, so this mapping cannot go stale.
    return Salon.objects.filter(pk=salon_id).values_list("owner_id", flat=True).first()


def dashboard_cache_invalidate_salon(*, salon_id, owner_id: int | None = None) -> None:
    """Every dashboard that includes this salon: per salon, the owner's all-salons
    view, and the staff's all-salons view. Call after commit."""
    owner_id = owner_id if owner_id is not None else _salon_owner_id(salon_id)
    versions = [f"dashboard:version:salon:{salon_id}", "dashboard:version:all"]
    if owner_id is not None:
        versions.append(f"dashboard:version:owner:{owner_id}")
    cache_service.invalidate(versions=versions)


# --- salon:{id} -----------------------------------------------------------------
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
        "updated_at": salon.updated_at.isoformat(),
    }


def salon_cached(salon_id) -> dict[str, Any] | None:
    """The salon's fields as plain JSON, read through ``salon:{id}``."""

    def load() -> dict[str, Any] | None:
        salon = Salon.objects.filter(pk=salon_id).first()
        return _salon_data(salon) if salon else None

    return cache_service.get_or_set(salon_key(salon_id), load, SALON_TTL)


def salon_cache_get(salon_id) -> dict[str, Any] | None:
    return cache_service.get(salon_key(salon_id))


def salon_cache_set(salon: Salon) -> None:
    cache_service.set(salon_key(salon.pk), _salon_data(salon), SALON_TTL)


def salon_cache_invalidate(salon_id) -> None:
    cache_service.invalidate(salon_key(salon_id))
