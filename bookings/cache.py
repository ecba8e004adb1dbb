"""The dashboard's cache (``salon:{id}`` is bookings/salon_cache.py).

The dashboard's keys are ``dashboard:stats:{userId}:{salonId?}``; its viewers
(the owner, every staff member, per salon and over all salons) cannot be listed
cheaply, so most writes do not delete their keys: they give new versions to the
three version keys their values are tagged with (the salon's, its owner's, and
the global one staff's all-salons view uses). O(1) per write, no KEYS or SCAN.
Booking writes through the services (create, update, cancel) patch the cached
values in place instead, with an exact delta, so the dashboards stay hits:

- A value is computed in one PostgreSQL snapshot (``dashboard_snapshot``) and
  keeps it, with the ids of the changes patched into it since.
- It is stored registered under every salon it covers: the hash
  ``dashboard:keys:salon:{salonId}`` maps its key to its token and the salon's
  time zone as the value saw it, written in the MULTI block that stores it.
- After commit, a booking change (its transaction's xid, the booking's state
  before and after) is first announced in ``dashboard:writes:{scope}`` (a
  sequence and a sorted set per version scope), then applied to each registered
  value whose snapshot does not see the xid and that has not applied it yet,
  under WATCH/MULTI (bookings/dashboard_changes.py). The value keeps its
  version tag and TTL.
- A reader stores its value under WATCH of its scope's sequence, after applying
  the changes announced since it started computing that its snapshot does not
  see: a change that commits while a value is being computed is in the value
  either way, and never twice.
- Whatever cannot be patched exactly (not PostgreSQL, a write outside a
  transaction, a value without a snapshot, a booking moved to another salon,
  the cache Redis failing) falls back to the version bump.
"""

import functools
import itertools
import logging
import uuid
from typing import Any

import redis
from django.db import connection, transaction

from bookings.dashboard_changes import BookingChange, BookingState, change_applied
from bookings.models import Booking, Salon
from bookings.selectors import dashboard_snapshot
from saas.cache import cache_service
from saas.cache_values import CacheUnavailable, Fetched, Queue, ttl_for
from saas.tenancy import salons_for

logger = logging.getLogger(__name__)

DASHBOARD_TTL = "DASHBOARD_CACHE_TTL_SECONDS"
#: Changes each dashboard:writes:{scope} keeps for readers still computing; a
#: reader that finds some of those it needs dropped does not store its value.
DASHBOARD_WRITES_KEPT = 1000
DASHBOARD_WRITES_TTL_SECONDS = 600


def dashboard_key(user_id, salon_id=None) -> str:
    return f"dashboard:stats:{user_id}:{salon_id or ''}"


def _version_scope(user, salon_id=None) -> str:
    if salon_id:
        return f"salon:{salon_id}"
    if user.is_staff:
        return "all"
    return f"owner:{user.pk}"


def _salon_scopes(salon_id, owner_id: int | None) -> list[str]:
    """The version scopes of every dashboard that includes this salon."""
    scopes = [f"salon:{salon_id}", "all"]
    if owner_id is not None:
        scopes.append(f"owner:{owner_id}")
    return scopes


def dashboard_version_key(user, salon_id=None) -> str:
    """The version key a viewer's dashboard value is tagged with."""
    return f"dashboard:version:{_version_scope(user, salon_id)}"


def _writes_key(scope: str) -> str:
    return f"dashboard:writes:{scope}"


def _writes_seq_key(scope: str) -> str:
    return f"dashboard:writes:{scope}:seq"


def _salon_keys_key(salon_id) -> str:
    return f"dashboard:keys:salon:{salon_id}"


def _dashboard_scope(user) -> str:
    return "staff" if user.is_staff else "owner"


# --- reads -----------------------------------------------------------------------
# A scope's sequence of announced changes; a lost (evicted, flushed) one restarts
# from the clock in microseconds, far past any number a reader computing holds.
_START_SEQUENCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[1], t[1] .. string.format('%06d', t[2]))
end
"""
_SEQUENCE = _START_SEQUENCE + "return redis.call('GET', KEYS[1])"


class _DashboardStore:
    """fetch()'s StoreHook for a dashboard: registers the value under its salons
    and applies the changes announced in its scope since it started computing."""

    def __init__(self, key: str, scope: str) -> None:
        self.key = key
        self.log = _writes_key(scope)
        self.keys = [_writes_seq_key(scope)]

    def begin(self, client: redis.Redis) -> int:
        """The scope's sequence number before computing (created if absent)."""
        return int(client.eval(_SEQUENCE, 1, self.keys[0]))

    def prepare(self, pipe, value, seen: int) -> tuple[dict[str, Any], Queue] | None:
        zones: dict[str, str] = value["zones"]
        stored = {k: v for k, v in value.items() if k != "zones"}
        stored.update(token=uuid.uuid4().hex[:16], patched=[])
        started, current = seen, int(pipe.get(self.keys[0]) or 0)
        if current != started:
            if current < started or stored["snapshot"] is None:
                return None
            changes = pipe.zrangebyscore(self.log, started + 1, current)
            if len(changes) != current - started:
                return None  # some were dropped: cannot tell what it misses
            for raw in changes:
                change = BookingChange.from_json(raw)
                if change.salon_id not in zones:
                    return None  # a salon it does not know (created since)
                stored = (
                    change_applied(stored, change, zones[change.salon_id]) or stored
                )

        ttl = ttl_for(DASHBOARD_TTL) * 2

        def register(p) -> None:
            for salon_id, zone in zones.items():
                p.hset(_salon_keys_key(salon_id), self.key, f"{stored['token']}|{zone}")
                p.expire(_salon_keys_key(salon_id), ttl)

        return stored, register


def dashboard_stats_cached(*, user, salon_id: uuid.UUID | None = None) -> Fetched:
    """The dashboard read through the cache; ``.hit`` says whether it was cached."""
    scope = _dashboard_scope(user)
    key = dashboard_key(user.pk, salon_id)

    def compute() -> dict[str, Any]:
        computed = dashboard_snapshot(user=user, salon_id=salon_id)
        return {
            "scope": scope,
            "stats": computed.stats,
            "snapshot": computed.snapshot,
            "zones": computed.salon_zones,
        }

    def fetch() -> Fetched:
        return cache_service.fetch(
            key,
            compute,
            DASHBOARD_TTL,
            version_key=dashboard_version_key(user, salon_id),
            store_hook=_DashboardStore(key, _version_scope(user, salon_id)),
        )

    fetched = fetch()
    if fetched.hit and "token" not in fetched.value:
        # Stored by a version that did not register values for patching:
        # replace it once rather than recompute on every read until its TTL.
        cache_service.delete(key)
        fetched = fetch()
    if fetched.value["scope"] == "staff" and scope != "staff":
        # Computed while this user was staff: their rights have shrunk since.
        return Fetched(
            dashboard_snapshot(user=user, salon_id=salon_id).stats, hit=False
        )
    return Fetched(fetched.value["stats"], hit=fetched.hit)


def dashboard_cache_get(*, user, salon_id=None) -> dict[str, Any] | None:
    value = cache_service.get_versioned(
        dashboard_key(user.pk, salon_id), dashboard_version_key(user, salon_id)
    )
    if value is None or (value["scope"] == "staff" and not user.is_staff):
        return None
    return value["stats"]


def dashboard_cache_set(*, user, stats: dict[str, Any], salon_id=None) -> None:
    """Store stats computed by the caller. Without a snapshot they cannot be
    patched: registered all the same, so a booking write invalidates them."""
    key = dashboard_key(user.pk, salon_id)
    salons = salons_for(user)
    if salon_id is not None:
        salons = salons.filter(pk=salon_id)
    salon_ids = list(salons.values_list("pk", flat=True))
    token = uuid.uuid4().hex[:16]
    ttl = ttl_for(DASHBOARD_TTL) * 2

    def register(pipe) -> None:
        for pk in salon_ids:
            pipe.hset(_salon_keys_key(pk), key, f"{token}|")
            pipe.expire(_salon_keys_key(pk), ttl)

    cache_service.set_versioned(
        key,
        {
            "scope": _dashboard_scope(user),
            "stats": stats,
            "snapshot": None,
            "token": token,
            "patched": [],
        },
        DASHBOARD_TTL,
        version_key=dashboard_version_key(user, salon_id),
        also=register,
    )


# --- writes ----------------------------------------------------------------------
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
    cache_service.invalidate(
        versions=[
            f"dashboard:version:{scope}" for scope in _salon_scopes(salon_id, owner_id)
        ]
    )


_change_numbers = itertools.count()


def dashboard_cache_patch_on_commit(
    *, booking: Booking, before: BookingState | None, owner_id: int | None = None
) -> None:
    """Inside the transaction that saved ``booking`` (locked, or new: ``before``
    None): patch the dashboards with its change after commit, or invalidate them
    when a patch could not be exact."""
    after = BookingState.of(booking)
    salon_ids = {after.salon_id} | ({before.salon_id} if before else set())
    if (
        connection.vendor != "postgresql"
        or not connection.in_atomic_block
        or len(salon_ids) > 1
    ):
        for salon_id in salon_ids:
            transaction.on_commit(
                functools.partial(dashboard_cache_invalidate_salon, salon_id=salon_id),
                robust=True,
            )
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text")
        xid = int(cursor.fetchone()[0])
    if owner_id is None:
        owner_id = _salon_owner_id(booking.salon_id)
    change = BookingChange(
        f"{xid}.{next(_change_numbers)}", xid, after.salon_id, owner_id, before, after
    )
    transaction.on_commit(lambda: dashboard_cache_patch(change), robust=True)


# Announce one change in each scope's log: its sequence number is the score.
_ANNOUNCE = """
local n = #KEYS / 2
for i = 1, n do
    if redis.call('EXISTS', KEYS[n + i]) == 0 then
        local t = redis.call('TIME')
        redis.call('SET', KEYS[n + i], t[1] .. string.format('%06d', t[2]))
    end
    local seq = redis.call('INCR', KEYS[n + i])
    redis.call('ZADD', KEYS[i], seq, ARGV[1])
    redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(tonumber(ARGV[2]) + 1))
    redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return n
"""


def dashboard_cache_patch(change: BookingChange) -> None:
    """After ``change`` commits: patch every cached dashboard of its salon, or
    invalidate them all when one cannot be patched exactly. Never raises."""
    try:
        exact = _dashboard_patch(change)
    except CacheUnavailable:
        exact = False
    except Exception:
        logger.exception("Dashboard patch failed; invalidating instead")
        exact = False
    if not exact:
        dashboard_cache_invalidate_salon(
            salon_id=change.salon_id, owner_id=change.owner_id
        )


def _dashboard_patch(change: BookingChange) -> bool:
    scopes = _salon_scopes(change.salon_id, change.owner_id)
    keys = [*map(_writes_key, scopes), *map(_writes_seq_key, scopes)]
    record = change.to_json()
    # Announced first: a reader that stores after this applies it itself, one
    # that stored before is registered below.
    cache_service.execute(
        lambda c: c.eval(
            _ANNOUNCE,
            len(keys),
            *keys,
            record,
            DASHBOARD_WRITES_KEPT,
            DASHBOARD_WRITES_TTL_SECONDS,
        )
    )
    registry = _salon_keys_key(change.salon_id)
    registered = cache_service.execute(lambda c: c.hkeys(registry))
    if not registered:
        # Nothing cached covers the salon, or its registry was evicted (it
        # outlives the values it lists otherwise): only a version bump is safe.
        return False
    exact = True

    for raw_key in registered:
        key = raw_key.decode()

        def patch(pipe: redis.client.Pipeline, value, key=key):
            nonlocal exact
            entry = pipe.hget(registry, key)
            if entry is None:
                return None, None
            token, _, zone = entry.decode().partition("|")
            if value is None or value.get("token") != token:
                # Expired, invalidated or replaced: forget the registration.
                return None, lambda p: p.hdel(registry, key)
            if value.get("snapshot") is None:
                exact = False
                return None, None
            return change_applied(value, change, zone), None

        cache_service.update_versioned(key, patch, watch=[registry])
    return exact
