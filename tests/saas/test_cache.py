"""CacheService on the real test Redis: keys, TTLs, values, decorators, counters,
stampede protection and invalidation races."""

import copy
import datetime
import inspect
import logging
import threading
import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import transaction
from django.test import override_settings

from saas.cache import (
    cache_evict,
    cache_service,
    cache_stats,
    cacheable,
)
from saas.redis import cache_redis
from tests.utils import wait_until


@pytest.fixture
def raw():
    return cache_redis()


def test_set_stores_under_the_raw_key_with_its_ttl(raw):
    cache_service.set("salon:abc", {"name": "Hair"}, 1800)
    assert raw.get("salon:abc") == b'{"name":"Hair"}'
    assert 1795 <= raw.ttl("salon:abc") <= 1800
    assert cache_service.get("salon:abc") == {"name": "Hair"}


@override_settings(CACHE_TTL_SECONDS=123, TEMPLATE_CACHE_TTL_SECONDS=77)
def test_ttl_defaults_to_cache_ttl_seconds_or_a_named_setting(raw):
    cache_service.set("misc:a", 1)
    cache_service.set("template:b", 1, "TEMPLATE_CACHE_TTL_SECONDS")
    assert 118 <= raw.ttl("misc:a") <= 123
    assert 72 <= raw.ttl("template:b") <= 77


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True, "x"]},
        0,
        "",
        [],
        (1, 2),
        {1: "int key"},
        {"when": datetime.datetime(2030, 1, 2, 3, 4, tzinfo=datetime.UTC)},
        {"id": uuid.UUID(int=7), "amount": Decimal("1.10")},
        [1, True, 1.0],
    ],
)
def test_values_round_trip_exactly(value):
    cache_service.set("misc:value", value, 60)
    got = cache_service.get("misc:value")
    assert got == value
    assert type(got) is type(value)
    if isinstance(value, list):
        assert [type(x) for x in got] == [type(x) for x in value]


def test_json_values_are_readable_in_redis(raw):
    cache_service.set("conversation:1", {"customer_name": "María"}, 60)
    assert raw.get("conversation:1").decode() == '{"customer_name":"Mar\\u00eda"}'


def test_get_of_absent_key_is_default_and_counts_a_miss():
    assert cache_service.get("salon:none") is None
    assert cache_service.get("salon:none", "fallback") == "fallback"
    assert cache_stats()["salon"] == {"hits": 0, "misses": 2, "hit_rate": 0.0}


def test_counters_per_namespace_and_debug_logs(caplog):
    cache_service.set("salon:1", "x", 60)
    with caplog.at_level(logging.DEBUG, logger="saas.cache"):
        cache_service.get("salon:1")
        cache_service.get("salon:1")
        cache_service.get("salon:1")
        cache_service.get("template:9")
    stats = cache_stats()
    assert stats["salon"] == {"hits": 3, "misses": 0, "hit_rate": 1.0}
    assert stats["template"] == {"hits": 0, "misses": 1, "hit_rate": 0.0}
    assert "Cache hit: salon:1" in caplog.messages
    assert "Cache miss: template:9" in caplog.messages


def test_delete_and_reset(raw):
    cache_service.set("salon:1", "x", 60)
    cache_service.set("salon:2", "y", 60)
    assert cache_service.delete("salon:1") == 1
    assert cache_service.get("salon:1") is None
    from saas.redis import queue_redis

    queue_redis().set("broker:survives", "1")
    cache_service.reset()
    assert raw.dbsize() == 0
    assert queue_redis().get("broker:survives") == "1"
    assert cache_stats() == {}


def test_reset_refuses_when_the_cache_shares_the_brokers_db(settings):
    settings.REDIS_QUEUE_DB = settings.REDIS_DB
    cache_service.set("salon:1", "x", 60)
    with pytest.raises(RuntimeError):
        cache_service.reset()
    assert cache_service.get("salon:1") == "x"


def test_get_or_set_computes_once_then_hits(raw):
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    assert cache_service.get_or_set("salon:x", compute, 60) == {"n": 1}
    assert cache_service.get_or_set("salon:x", compute, 60) == {"n": 1}
    assert calls == [1]
    assert raw.get("lock:salon:x") is None  # the lock was released
    assert cache_stats()["salon"]["hits"] == 1


def test_invalidate_makes_the_next_read_compute_again():
    values = iter(["old", "new"])
    assert cache_service.get_or_set("salon:x", lambda: next(values), 60) == "old"
    cache_service.invalidate("salon:x")
    assert cache_service.get("salon:x") is None
    assert cache_service.get_or_set("salon:x", lambda: next(values), 60) == "new"


def test_reader_that_computed_before_an_invalidation_does_not_store_its_value():
    """The reader reads the database, a writer commits and invalidates, then the
    reader finishes: its (stale) value must not be stored."""

    def compute_then_a_write_lands():
        value = "computed before the write"
        cache_service.invalidate("salon:race")
        return value

    assert (
        cache_service.get_or_set("salon:race", compute_then_a_write_lands, 60)
        == "computed before the write"
    )
    assert cache_service.get_or_set("salon:race", lambda: "fresh", 60) == "fresh"
    assert cache_service.get("salon:race") == "fresh"


def test_reader_that_saw_a_tombstone_cannot_overwrite_a_later_one():
    cache_service.get_or_set("salon:t", lambda: "v1", 60)
    cache_service.invalidate("salon:t")

    def compute_then_another_write():
        cache_service.invalidate("salon:t")
        return "stale"

    cache_service.get_or_set("salon:t", compute_then_another_write, 60)
    assert cache_service.get("salon:t") is None


def test_versioned_value_is_a_miss_once_its_version_changes(raw):
    values = iter(["v1", "v2"])
    args = ("dashboard:stats:1:", lambda: next(values), 60)
    assert cache_service.get_or_set(*args, version_key="dashboard:version:x") == "v1"
    assert cache_service.get_or_set(*args, version_key="dashboard:version:x") == "v1"
    cache_service.invalidate(versions=["dashboard:version:x"])
    assert cache_service.get_or_set(*args, version_key="dashboard:version:x") == "v2"


def test_versioned_value_tagged_before_a_concurrent_write_is_not_served():
    def compute_then_a_write_lands():
        cache_service.invalidate(versions=["dashboard:version:y"])
        return "stale"

    cache_service.get_or_set(
        "dashboard:stats:2:",
        compute_then_a_write_lands,
        60,
        version_key="dashboard:version:y",
    )
    fresh = cache_service.get_or_set(
        "dashboard:stats:2:", lambda: "fresh", 60, version_key="dashboard:version:y"
    )
    assert fresh == "fresh"


def test_a_lost_version_key_never_revives_old_values(raw):
    """If the version key is evicted, old values must not match a new one."""
    cache_service.get_or_set("dashboard:stats:3:", lambda: "old", 60, version_key="v:k")
    raw.delete("v:k")
    got = cache_service.get_or_set(
        "dashboard:stats:3:", lambda: "new", 60, version_key="v:k"
    )
    assert got == "new"


def _mget_calls(raw) -> int:
    return raw.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)


def patient_caches() -> dict:
    """The test cache with a 5 s socket timeout: on a loaded 2-core machine a
    0.25 s stall would open the breaker, which is fail-open working, not the
    lock under test. (A new URL, since django-redis pools by URL.)"""
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] += "?socket_timeout=5"
    return caches


def test_stampede_200_concurrent_misses_compute_at_most_twice(raw):
    with override_settings(CACHES=patient_caches()):
        assert (
            cache_service.client().connection_pool.connection_kwargs["socket_timeout"]
            == 5
        )
        stampede(raw)


def stampede(raw):
    computations = []
    release = threading.Event()
    barrier = threading.Barrier(200)
    results = []
    mgets_before = _mget_calls(raw)

    def compute():
        computations.append(threading.get_ident())
        release.wait(30)  # hold the computation while all the others miss
        return {"stats": 42}

    def reader():
        barrier.wait()
        results.append(
            cache_service.get_or_set(
                "dashboard:stats:9:", compute, 60, version_key="dashboard:version:z"
            )
        )

    threads = [threading.Thread(target=reader) for _ in range(200)]
    for thread in threads:
        thread.start()
    # Every reader has read the key (and found nothing) before the value exists.
    wait_until(lambda: computations, timeout=30, message="a computation started")
    wait_until(
        lambda: _mget_calls(raw) - mgets_before >= 200,
        timeout=30,
        message="all 200 readers missed",
    )
    release.set()
    for thread in threads:
        thread.join(30)
    assert len(results) == 200
    assert all(result == {"stats": 42} for result in results)
    assert 1 <= len(computations) <= 2
    stats = cache_stats()["dashboard"]
    assert stats["misses"] == len(computations)
    assert stats["hits"] == 200 - len(computations)


# --- decorators ---------------------------------------------------------------
class SalonReader:
    def __init__(self):
        self.calls = 0

    @cacheable(key="salon:{salon_id}", ttl="SALON_CACHE_TTL_SECONDS")
    def load(self, salon_id: str, *, detail: bool = False) -> dict:
        self.calls += 1
        return {"id": salon_id, "calls": self.calls}


def test_cacheable_on_a_method_with_a_formatted_key(raw):
    reader = SalonReader()
    assert reader.load("s1") == {"id": "s1", "calls": 1}
    assert reader.load(salon_id="s1") == {"id": "s1", "calls": 1}
    assert reader.load("s2") == {"id": "s2", "calls": 2}
    assert 1795 <= raw.ttl("salon:s1") <= 1800


def test_cacheable_keeps_the_signature_and_hints():
    signature = inspect.signature(SalonReader.load)
    assert list(signature.parameters) == ["self", "salon_id", "detail"]
    assert SalonReader.load.__annotations__["return"] is dict
    assert SalonReader.load.__name__ == "load"


def test_cacheable_static_and_callable_keys(raw):
    calls = []

    @cacheable(key="dashboard", ttl=300)
    def dashboard() -> str:
        calls.append("d")
        return "computed"

    @cacheable(key=lambda template_id: f"template:{template_id}", ttl=3600)
    def template(template_id: int) -> int:
        calls.append(template_id)
        return template_id * 2

    assert dashboard() == dashboard() == "computed"
    assert template(4) == template(4) == 8
    assert calls == ["d", 4]
    assert raw.get("dashboard") == b'"computed"'
    assert 3595 <= raw.ttl("template:4") <= 3600


@pytest.mark.django_db(transaction=True)
def test_cache_evict_after_commit_not_on_rollback_or_error():
    @cache_evict(keys=[lambda salon, **kw: f"salon:{salon}", "template:{template}"])
    def update(salon: str, *, template: str, fail: bool = False) -> str:
        if fail:
            raise ValueError("bad input")
        return "updated"

    def prime():
        cache_service.set("salon:1", "cached", 60)
        cache_service.set("template:2", "cached", 60)

    prime()
    with pytest.raises(ValueError):
        update("1", template="2", fail=True)
    assert cache_service.get("salon:1") == "cached"

    with pytest.raises(RuntimeError), transaction.atomic():
        update("1", template="2")
        raise RuntimeError("rolled back")
    assert cache_service.get("salon:1") == "cached"

    with transaction.atomic():
        assert update("1", template="2") == "updated"
        assert cache_service.get("salon:1") == "cached"  # not before commit
    assert cache_service.get("salon:1") is None
    assert cache_service.get("template:2") is None
