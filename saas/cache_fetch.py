"""Read-through with stampede protection, for saas/cache.py's CacheService.

On a miss one caller takes a short lock and computes; the others poll for its
value and compute themselves only if the lock expires. A computed value is
stored only if the key still holds what the caller saw before computing
(compare-and-set in Lua), or as a StoreHook prepares it under WATCH.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis

from saas.cache_values import (
    MISSING,
    WATCH_ATTEMPTS,
    CacheBusy,
    CacheUnavailable,
    Fetched,
    StoreHook,
    decode,
    encode,
    setting_or,
    ttl_for,
)

# Store ``ARGV[2]`` with TTL ``ARGV[3]`` ms only if the key still holds ``ARGV[1]``
# ("" meaning: absent). Returns 1 when stored.
_CAS_SET = """
local current = redis.call('GET', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class ReadThrough:
    """get_or_set and fetch; mixed into CacheService, whose ``_call``,
    ``counters`` and ``_read`` helpers it uses."""

    # --- read-through with stampede protection ---------------------------
    def get_or_set(
        self,
        key: str,
        compute: Callable[[], Any],
        ttl: int | str | None = None,
        *,
        version_key: str | None = None,
    ) -> Any:
        return self.fetch(key, compute, ttl, version_key=version_key).value

    def get_or_set_with(
        self,
        key: str,
        compute: Callable[[], Any],
        ttl: int | str | None = None,
        *,
        fields: Iterable[str],
    ) -> Any:
        """get_or_set of a dict that must hold ``fields``: a value stored by an
        older version without them is computed again, and replaces it."""
        value = self.get_or_set(key, compute, ttl)
        if isinstance(value, dict) and not set(fields) <= value.keys():
            self.delete(key)
            value = self.get_or_set(key, compute, ttl)
        return value

    def fetch(
        self,
        key: str,
        compute: Callable[[], Any],
        ttl: int | str | None = None,
        *,
        version_key: str | None = None,
        store_hook: StoreHook | None = None,
    ) -> Fetched:
        """The cached value of ``key``, computing and storing it on a miss.

        With ``version_key``, a value counts only if it was stored under the
        version that key holds now. With ``store_hook``, the hook decides what
        is stored (see StoreHook).
        """
        try:
            raw, value, version = self._read(key, version_key)
        except CacheUnavailable:
            self.counters.count(key, hit=False)
            return Fetched(compute(), hit=False)
        if value is not MISSING:
            self.counters.count(key, hit=True)
            return Fetched(value, hit=True)

        lock_key = f"lock:{key}"
        token = uuid.uuid4().hex
        lock_ms = int(setting_or("CACHE_LOCK_SECONDS", 10) * 1000)
        deadline = time.monotonic() + lock_ms / 1000
        while True:
            try:
                locked = self._call(
                    lambda c: c.set(lock_key, token, nx=True, px=lock_ms)
                )
                if locked:
                    # Double-check: the previous holder may have stored the
                    # value since our last read.
                    try:
                        raw, value, version = self._read(key, version_key)
                    except CacheUnavailable:
                        self._unlock(lock_key, token)
                        raise
                    if value is not MISSING:
                        self._unlock(lock_key, token)
                        self.counters.count(key, hit=True)
                        return Fetched(value, hit=True)
                    return self._compute_and_store(
                        key, compute, ttl, raw, version, lock_key, token, store_hook
                    )
                time.sleep(random.uniform(0.005, 0.02))
                raw, value, version = self._read(key, version_key)
                if value is not MISSING:
                    self.counters.count(key, hit=True)
                    return Fetched(value, hit=True)
            except CacheBusy:
                time.sleep(random.uniform(0.005, 0.02))
            except CacheUnavailable:
                break
            if time.monotonic() >= deadline:
                break
        self.counters.count(key, hit=False)
        return Fetched(compute(), hit=False)

    def _read(self, key: str, version_key: str | None) -> tuple[bytes | None, Any, Any]:
        """(raw bytes, decoded value or MISSING, current version)."""
        if version_key is None:
            raw = self._call(lambda c: c.get(key))
            return raw, decode(raw), None
        raw, current = self._call(lambda c: c.mget(key, version_key))
        if current is None:
            fresh = uuid.uuid4().hex.encode()
            self._call(lambda c: c.set(version_key, fresh, nx=True))
            current = self._call(lambda c: c.get(version_key)) or fresh
        envelope = decode(raw)
        current = current.decode()
        if (
            envelope is MISSING
            or not isinstance(envelope, dict)
            or envelope.get("version") != current
        ):
            return raw, MISSING, current
        return raw, envelope["value"], current

    def _compute_and_store(
        self, key, compute, ttl, raw, version, lock_key, token, store_hook=None
    ):
        self.counters.count(key, hit=False)
        try:
            seen = None
            if store_hook is not None:
                try:
                    seen = self._call(store_hook.begin)
                except CacheUnavailable:
                    return Fetched(compute(), hit=False)
            value = compute()
            ttl_ms = ttl_for(ttl) * 1000
            try:
                if store_hook is not None:
                    value = self._call(
                        lambda c: self._store_guarded(
                            c, key, raw, version, value, ttl_ms, store_hook, seen
                        )
                    )
                else:
                    stored = (
                        value
                        if version is None
                        else {"version": version, "value": value}
                    )
                    data = encode(stored)
                    self._call(
                        lambda c: c.eval(_CAS_SET, 1, key, raw or b"", data, ttl_ms)
                    )
            except CacheUnavailable:
                pass
            return Fetched(value, hit=False)
        finally:
            self._unlock(lock_key, token)

    @staticmethod
    def _store_guarded(client, key, raw, version, value, ttl_ms, hook, seen) -> Any:
        """Store as the hook prepares it, only while ``key`` still holds ``raw``
        (compare-and-set under WATCH). Returns the value to serve."""
        with client.pipeline(transaction=True) as pipe:
            for _ in range(WATCH_ATTEMPTS):
                try:
                    pipe.watch(key, *hook.keys)
                    if pipe.get(key) != raw:
                        pipe.unwatch()
                        return value
                    prepared = hook.prepare(pipe, value, seen)
                    if prepared is None:
                        pipe.unwatch()
                        return value
                    final, queue = prepared
                    stored = (
                        final
                        if version is None
                        else {"version": version, "value": final}
                    )
                    pipe.multi()
                    pipe.set(key, encode(stored), px=ttl_ms)
                    queue(pipe)
                    pipe.execute()
                    return final
                except redis.WatchError:
                    continue
        return value

    def _unlock(self, lock_key: str, token: str) -> None:
        try:
            self._call(lambda c: c.eval(_UNLOCK, 1, lock_key, token))
        except CacheUnavailable:
            pass
