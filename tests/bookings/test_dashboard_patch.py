"""Booking writes patch the cached dashboards in place (bookings/cache.py): the
patched value is a hit and equals a recompute at its own generated_at, never
counts a write twice, and whatever cannot be patched exactly invalidates."""

import copy
import random
import threading
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from bookings import cache as bookings_cache
from bookings import services
from bookings.cache import (
    dashboard_cache_set,
    dashboard_key,
    dashboard_stats_cached,
)
from bookings.models import Booking, BookingReminder
from bookings.selectors import booking_figures, dashboard_snapshot, dashboard_stats
from saas.redis import cache_redis
from tests.factories import BookingFactory, SalonFactory
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Zones with DST, half-hour offsets, and both ends of the offset range.
ZONES = [
    "UTC",
    "Europe/Madrid",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Adelaide",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "America/Santiago",
]


def assert_equals_a_recompute(fetched, user, salon_id=None):
    at = datetime.fromisoformat(fetched.value["generated_at"])
    recomputed = dashboard_snapshot(user=user, salon_id=salon_id, now=at).stats
    assert fetched.value == recomputed


def create(salon, start_at=None, status=Booking.Status.PENDING):
    return services.booking_create(
        salon=salon,
        customer_name="Ana",
        customer_phone="+34600111222",
        service_name="Colour",
        start_at=start_at or timezone.now() + timedelta(days=2),
        status=status,
    )


# --- one definition of what a booking adds -----------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_booking_figures_add_up_to_the_selectors_numbers(user, seed):
    """The patch's per-booking figures and the selector's aggregate cannot drift:
    over random bookings (around now and the salons' local midnights), their sum
    is what the selector counts."""
    rng = random.Random(seed)
    now = timezone.now().replace(microsecond=0)
    salons = [SalonFactory(owner=user, timezone=zone) for zone in rng.sample(ZONES, 4)]
    bookings = []
    for _ in range(60):
        salon = rng.choice(salons)
        tz = ZoneInfo(salon.timezone)
        local_midnight = datetime.combine(
            now.astimezone(tz).date() + timedelta(days=rng.choice([0, 1])),
            time.min,
            tzinfo=tz,
        )
        start_at = rng.choice(
            [
                now,
                now + timedelta(minutes=rng.randint(-2000, 2000)),
                local_midnight,
                local_midnight - timedelta(microseconds=1),
            ]
        )
        status = rng.choice(Booking.Status.values)
        bookings.append(BookingFactory(salon=salon, start_at=start_at, status=status))

    stats = dashboard_stats_at(user, now)
    summed = {"bookings_total": 0, "bookings_today": 0, "bookings_upcoming": 0}
    by_status = dict.fromkeys(Booking.Status.values, 0)
    for booking in bookings:
        figures = booking_figures(
            start_at=booking.start_at,
            status=booking.status,
            now=now,
            zone=booking.salon.timezone,
        )
        for name in summed:
            summed[name] += figures[name]
        for status, n in figures["bookings_by_status"].items():
            by_status[status] += n
    assert {name: stats[name] for name in summed} == summed
    assert stats["bookings_by_status"] == by_status
    assert stats["bookings_today"] and stats["bookings_upcoming"]  # not vacuous


def dashboard_stats_at(user, now):
    return dashboard_snapshot(user=user, now=now).stats


# --- patched in place ---------------------------------------------------------
def test_random_booking_writes_keep_every_dashboard_a_hit_equal_to_a_recompute(
    user, staff_user
):
    rng = random.Random(7)
    salons = [SalonFactory(owner=user, timezone=zone) for zone in ZONES[:3]]
    for salon in salons:
        BookingFactory(salon=salon)
    views = [(user, None), (user, salons[0].pk), (staff_user, None)]
    views += [(staff_user, salon.pk) for salon in salons]
    for viewer, salon_id in views:
        dashboard_stats_cached(user=viewer, salon_id=salon_id)
    before = {
        view: dashboard_stats_cached(user=view[0], salon_id=view[1]).value
        for view in views
    }

    now = timezone.now()
    for _ in range(40):
        existing = list(Booking.objects.all())
        action = rng.choice(["create", "update", "cancel"])
        try:
            if action == "create":
                create(
                    rng.choice(salons),
                    start_at=now + timedelta(minutes=rng.randint(5, 3000)),
                    status=rng.choice(Booking.ACTIVE_STATUSES),
                )
            elif action == "update":
                data = rng.choice(
                    [
                        {"status": rng.choice(Booking.Status.values)},
                        {"start_at": now + timedelta(minutes=rng.randint(5, 3000))},
                    ]
                )
                services.booking_update(booking=rng.choice(existing), data=data)
            else:
                services.booking_cancel(booking=rng.choice(existing))
        except ValidationError:
            pass  # e.g. cancelling a completed booking

    for viewer, salon_id in views:
        fetched = dashboard_stats_cached(user=viewer, salon_id=salon_id)
        assert fetched.hit, (viewer, salon_id)
        assert_equals_a_recompute(fetched, viewer, salon_id)
        assert fetched.value != before[(viewer, salon_id)] or salon_id not in (
            None,
            salons[0].pk,
        )


def test_reader_whose_snapshot_includes_the_write_is_not_patched_twice(
    user, monkeypatch
):
    """The race: the write commits, a reader computes in a snapshot that sees
    it and stores its value, and only then does the write's patch run."""
    salon = SalonFactory(owner=user)
    BookingFactory(salon=salon)
    dashboard_stats_cached(user=user)
    held = []
    monkeypatch.setattr(bookings_cache, "dashboard_cache_patch", held.append)
    create(salon)
    assert len(held) == 1
    cache_redis().delete(dashboard_key(user.pk))  # the next reader computes

    computed = dashboard_stats_cached(user=user)
    assert not computed.hit and computed.value["bookings_total"] == 2
    monkeypatch.undo()
    bookings_cache.dashboard_cache_patch(held[0])

    fetched = dashboard_stats_cached(user=user)
    assert fetched.hit
    assert fetched.value["bookings_total"] == 2
    assert_equals_a_recompute(fetched, user)


def test_write_committing_while_a_reader_computes_is_applied_once(user, monkeypatch):
    """The reader's snapshot predates the write; the write commits and its patch
    finds no value yet; the reader applies it before storing, and a second run of
    the patch adds nothing."""
    salon = SalonFactory(owner=user)
    BookingFactory(salon=salon)
    dashboard_stats_cached(user=user, salon_id=salon.pk)  # the salon has a registry
    real_snapshot = bookings_cache.dashboard_snapshot
    patches = []
    real_patch = bookings_cache.dashboard_cache_patch

    def patch_and_keep(change):
        patches.append(change)
        real_patch(change)

    def writer():
        try:
            create(salon)
        finally:
            connection.close()

    def compute_then_write(**kwargs):
        computed = real_snapshot(**kwargs)
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(30)
        return computed

    monkeypatch.setattr(bookings_cache, "dashboard_cache_patch", patch_and_keep)
    monkeypatch.setattr(bookings_cache, "dashboard_snapshot", compute_then_write)
    first = dashboard_stats_cached(user=user)
    monkeypatch.setattr(bookings_cache, "dashboard_snapshot", real_snapshot)
    assert len(patches) == 1
    assert not first.hit and first.value["bookings_total"] == 2

    real_patch(patches[0])  # delivered again: already applied
    fetched = dashboard_stats_cached(user=user)
    assert fetched.hit and fetched.value["bookings_total"] == 2
    assert_equals_a_recompute(fetched, user)


def test_rolled_back_booking_write_patches_and_announces_nothing(user):
    salon = SalonFactory(owner=user)
    booking = BookingFactory(salon=salon)
    dashboard_stats_cached(user=user)
    dashboard_stats_cached(user=user, salon_id=salon.pk)
    raw = cache_redis()
    keys = sorted(raw.keys("dashboard:*"))
    values = raw.mget(keys)
    with pytest.raises(RuntimeError), transaction.atomic():
        create(salon)
        services.booking_cancel(booking=booking)
        raise RuntimeError("rolled back")
    assert sorted(raw.keys("dashboard:*")) == keys
    assert raw.mget(keys) == values
    assert dashboard_stats_cached(user=user).hit


def test_patch_of_a_vanished_value_forgets_its_registration(user):
    salon = SalonFactory(owner=user)
    dashboard_stats_cached(user=user)
    registry = f"dashboard:keys:salon:{salon.pk}"
    raw = cache_redis()
    assert raw.hkeys(registry) == [dashboard_key(user.pk).encode()]
    raw.delete(dashboard_key(user.pk))
    create(salon)
    assert raw.hkeys(registry) == []


def test_lost_registry_falls_back_to_invalidation(user):
    """Under memory pressure Redis may evict a salon's registry before the
    values it lists: the write then cannot find them and must invalidate."""
    salon = SalonFactory(owner=user)
    dashboard_stats_cached(user=user)
    cache_redis().delete(f"dashboard:keys:salon:{salon.pk}")
    create(salon)
    fetched = dashboard_stats_cached(user=user)
    assert not fetched.hit and fetched.value["bookings_total"] == 1


def test_reader_that_outlived_a_lost_sequence_does_not_store(user, monkeypatch):
    salon = SalonFactory(owner=user)
    create(salon)  # the sequences exist
    dashboard_stats_cached(user=user, salon_id=salon.pk)  # and a registry
    raw = cache_redis()
    real_snapshot = bookings_cache.dashboard_snapshot

    def compute_then_lose_the_log_and_write(**kwargs):
        computed = real_snapshot(**kwargs)
        raw.delete(*raw.keys("dashboard:writes:*"))
        thread = threading.Thread(target=lambda: (create(salon), connection.close()))
        thread.start()
        thread.join(30)
        return computed

    monkeypatch.setattr(
        bookings_cache, "dashboard_snapshot", compute_then_lose_the_log_and_write
    )
    assert not dashboard_stats_cached(user=user).hit
    monkeypatch.undo()
    fetched = dashboard_stats_cached(user=user)
    assert not fetched.hit and fetched.value["bookings_total"] == 2


# --- what still invalidates -----------------------------------------------------
def test_value_without_a_snapshot_is_invalidated_by_a_booking_write(user):
    salon = SalonFactory(owner=user)
    dashboard_cache_set(user=user, stats=dashboard_stats(user=user))
    assert dashboard_stats_cached(user=user).hit
    create(salon)
    fetched = dashboard_stats_cached(user=user)
    assert not fetched.hit and fetched.value["bookings_total"] == 1


def test_reschedule_that_resets_a_sent_reminder_invalidates(user):
    """Sent reminders are counted on the dashboard and are not part of the
    booking's patch: rewriting one falls back to invalidation."""
    salon = SalonFactory(owner=user)
    booking = create(salon)
    BookingReminder.objects.filter(booking=booking).update(
        status=BookingReminder.Status.SENT, sent_at=timezone.now()
    )
    assert dashboard_stats_cached(user=user).value["reminders_sent"] == 2
    services.booking_update(
        booking=booking, data={"start_at": timezone.now() + timedelta(days=9)}
    )
    fetched = dashboard_stats_cached(user=user)
    assert not fetched.hit and fetched.value["reminders_sent"] == 0
    assert fetched.value == dashboard_stats(user=user) | {
        "generated_at": fetched.value["generated_at"]
    }


def test_booking_moved_to_another_salon_invalidates_both(user):
    salon, other = SalonFactory(owner=user), SalonFactory(owner=user)
    booking = BookingFactory(salon=salon)
    dashboard_stats_cached(user=user, salon_id=salon.pk)
    dashboard_stats_cached(user=user, salon_id=other.pk)
    booking.salon = other
    booking.save()  # not through the services: untracked
    for salon_id, total in ((salon.pk, 0), (other.pk, 1)):
        fetched = dashboard_stats_cached(user=user, salon_id=salon_id)
        assert not fetched.hit and fetched.value["bookings_total"] == total


# --- fail-open --------------------------------------------------------------------
def caches_on(port: int) -> dict:
    caches = copy.deepcopy(settings.CACHES)
    for alias in caches.values():
        alias["LOCATION"] = f"redis://127.0.0.1:{port}/0"
    return caches


def test_booking_writes_while_the_cache_is_down_succeed_and_are_not_served_stale(
    make_redis_server, user, tmp_path
):
    """Redis comes back with its data: the invalidation the failed patch fell back
    to is replayed before the next read."""
    persistent = ["--dir", str(tmp_path), "--appendonly", "yes"]
    server = make_redis_server(extra=persistent)
    salon = SalonFactory(owner=user)
    booking = BookingFactory(salon=salon)
    with override_settings(
        CACHES=caches_on(server.port), CACHE_RETRY_AFTER_SECONDS=0.2
    ):
        dashboard_stats_cached(user=user)
        assert dashboard_stats_cached(user=user).hit
        server.stop()
        create(salon)
        services.booking_cancel(booking=booking)

        back = make_redis_server(port=server.port, extra=persistent)
        assert back.client().exists(dashboard_key(user.pk))

        def served_from_cache():
            fetched = dashboard_stats_cached(user=user)
            assert fetched.value["bookings_total"] == 2, "stale dashboard"
            assert fetched.value["bookings_by_status"]["cancelled"] == 1
            return fetched.hit

        wait_until(served_from_cache, timeout=20, message="cache used again")


def test_a_value_cached_before_patching_is_replaced_once(user):
    """A value stored without the patching fields (by the previous release) is
    recomputed and stored on the next read, not on every read until its TTL."""
    from bookings.cache import dashboard_version_key
    from saas.cache import cache_service

    salon = SalonFactory(owner=user)
    BookingFactory(salon=salon)
    old = {"scope": "owner", "stats": dashboard_stats(user=user)}
    cache_service.set_versioned(
        dashboard_key(user.pk), old, 300, version_key=dashboard_version_key(user)
    )

    first = dashboard_stats_cached(user=user)
    assert not first.hit and first.value["bookings_total"] == 1
    second = dashboard_stats_cached(user=user)
    assert second.hit and second.value == first.value
