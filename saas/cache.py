"""CacheService: the Redis cache in front of expensive reads, used by every app.

Keys are stored under exactly the names callers give (``salon:<id>``), in the
default cache alias's Redis DB (``REDIS_DB``), through django-redis's connection
pool and timeouts. Each app's ``cache.py`` builds its own keys.

Values are JSON when JSON round-trips them exactly (so ``redis-cli GET`` shows
them), pickle otherwise, signed with a key derived from ``SECRET_KEY``: a value
someone wrote into the cache's Redis without that key is a miss, never
unpickled (anyone who can write to Redis must not run code in every process).

Guarantees:
- Fail-open: a Redis error opens a per-process breaker for
  ``CACHE_RETRY_AFTER_SECONDS``; meanwhile reads compute from the database and
  writes skip the cache, so a request waits at most one socket timeout. The
  outage is logged once per ``CACHE_ERROR_LOG_INTERVAL_SECONDS``. Invalidations
  that failed are replayed by this process once Redis answers again.
- No stale value after an invalidation: ``invalidate`` writes a short-lived
  tombstone, and a reader stores what it computed only if the key still holds
  what it saw before computing (compare-and-set in Lua). Versioned keys carry
  the version read before computing; bumping the version (O(1), no KEYS/SCAN)
  makes every value tagged with an older one a miss.
- Patching in place: ``update_versioned`` rewrites a versioned value under
  WATCH/MULTI, keeping its version tag and TTL; ``fetch`` with a ``StoreHook``
  stores under WATCH too, after the hook has checked (and may amend) the value,
  for callers that patch values instead of invalidating them
  (bookings/cache.py).
- Stampede protection: on a miss one caller takes a short lock and computes;
  the others poll for its value and compute themselves only if the lock expires.
- Hit/miss counters per namespace (the key's first segment) are kept in this
  process's memory, without a Redis round trip; ``cache_stats()`` reads them.
  A caller served by another's computation after waiting counts as a hit.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar

import redis
from django.conf import settings
from django.core.cache import caches
from django.db import transaction

from saas.cache_fetch import ReadThrough
from saas.cache_values import (
    MISSING,
    WATCH_ATTEMPTS,
    CacheBusy,
    CacheUnavailable,
    Counters,
    Queue,
    decode,
    encode,
    logger,
    setting_or,
    ttl_for,
)

P = ParamSpec("P")
R = TypeVar("R")


class CacheService(ReadThrough):
    """get / set / delete / reset, plus get_or_set with stampede protection."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self.counters = Counters()
        self._state_lock = threading.Lock()
        self._down_until = 0.0
        self._last_error_log = -float("inf")
        # Invalidations that failed, to replay: key -> (kind, sequence number).
        self._pending: dict[str, tuple[str, int]] = {}
        self._pending_seq = 0
        self._replay_lock = threading.Lock()

    # --- connection and breaker ------------------------------------------
    def client(self) -> redis.Redis:
        if time.monotonic() < self._down_until:
            raise CacheUnavailable("cache breaker open")
        client = caches[self.alias].client.get_client(write=True)
        if self._pending:
            # Other threads wait here too: nobody reads before the replay lands.
            with self._replay_lock:
                self._replay_pending(client)
        return client

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        with self._state_lock:
            self._down_until = now + setting_or("CACHE_RETRY_AFTER_SECONDS", 1.0)
            interval = setting_or("CACHE_ERROR_LOG_INTERVAL_SECONDS", 60.0)
            should_log = now - self._last_error_log >= interval
            if should_log:
                self._last_error_log = now
        if should_log:
            logger.error(
                "Cache Redis unavailable (%s: %s); reading from the database "
                "(logged at most once every %ss)",
                type(exc).__name__,
                exc,
                interval,
            )

    def _call(self, operation: Callable[[redis.Redis], R]) -> R:
        try:
            return operation(self.client())
        except CacheUnavailable:
            raise
        except redis.exceptions.MaxConnectionsError as exc:
            raise CacheBusy(str(exc)) from exc
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            raise CacheUnavailable(str(exc)) from exc

    def reset_state(self) -> None:
        """Close the breaker, drop pending invalidations and zero the counters
        (this process only; Redis is untouched). For tests."""
        with self._state_lock:
            self._down_until = 0.0
            self._last_error_log = -float("inf")
            self._pending.clear()
        self.counters.reset()

    @property
    def available(self) -> bool:
        """False while the breaker is open (no Redis round trip)."""
        return time.monotonic() >= self._down_until

    def _replay_pending(self, client: redis.Redis) -> None:
        with self._state_lock:
            pending = dict(self._pending)
        if not pending:
            return
        self._write_invalidations(client, {k: kind for k, (kind, _) in pending.items()})
        with self._state_lock:
            for key, entry in pending.items():
                if self._pending.get(key) == entry:  # not failed again meanwhile
                    del self._pending[key]

    # --- plain operations ------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = decode(self._call(lambda c: c.get(key)))
        except CacheUnavailable:
            value = MISSING
        self.counters.count(key, hit=value is not MISSING)
        return default if value is MISSING else value

    def set(self, key: str, value: Any, ttl: int | str | None = None) -> bool:
        data = encode(value)
        try:
            return bool(self._call(lambda c: c.set(key, data, ex=ttl_for(ttl))))
        except CacheUnavailable:
            return False

    def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        try:
            return self._call(lambda c: c.delete(*keys))
        except CacheUnavailable:
            self._remember({key: "delete" for key in keys})
            return 0

    def ttl(self, key: str) -> int | None:
        """Seconds left on ``key`` (None if absent or the cache is down)."""
        try:
            seconds = self._call(lambda c: c.ttl(key))
        except CacheUnavailable:
            return None
        return seconds if seconds >= 0 else None

    def reset(self) -> None:
        """Empty the cache's Redis DB, never the broker's (refuses if shared)."""
        if (settings.REDIS_HOST, settings.REDIS_PORT, settings.REDIS_DB) == (
            settings.REDIS_QUEUE_HOST,
            settings.REDIS_QUEUE_PORT,
            settings.REDIS_QUEUE_DB,
        ):
            raise RuntimeError("The cache shares the broker's Redis DB; not flushing.")
        try:
            self._call(lambda c: c.flushdb())
        except CacheUnavailable:
            pass
        with self._state_lock:
            self._pending.clear()
        self.counters.reset()

    # --- invalidation ----------------------------------------------------
    def invalidate(self, *keys: str, versions: Iterable[str] = ()) -> None:
        """Tombstone ``keys`` and give each version key a new random version.

        Call after commit. A failure is remembered and replayed when Redis answers.
        """
        work = {key: "tombstone" for key in keys}
        work.update({key: "version" for key in versions})
        if not work:
            return
        try:
            self._call(lambda c: self._write_invalidations(c, work))
        except CacheUnavailable:
            self._remember(work)

    def _remember(self, work: dict[str, str]) -> None:
        with self._state_lock:
            for key, kind in work.items():
                self._pending_seq += 1
                self._pending[key] = (kind, self._pending_seq)

    def _write_invalidations(self, client: redis.Redis, work: dict[str, str]) -> None:
        if not work:
            return
        tombstone_ms = int(setting_or("CACHE_TOMBSTONE_SECONDS", 60) * 1000)
        pipe = client.pipeline(transaction=False)
        for key, kind in work.items():
            if kind == "version":
                pipe.set(key, uuid.uuid4().hex)
            elif kind == "tombstone":
                # Unique, so a reader that saw an earlier tombstone cannot
                # compare-and-set over this one.
                tombstone = b"\x00invalidated:" + uuid.uuid4().hex.encode()
                pipe.set(key, tombstone, px=tombstone_ms)
            else:
                pipe.delete(key)
        pipe.execute()

    # --- versioned values ------------------------------------------------
    def get_versioned(self, key: str, version_key: str, default: Any = None) -> Any:
        """The value of ``key`` if it was stored under ``version_key``'s version."""
        try:
            _, value, _ = self._read(key, version_key)
        except CacheUnavailable:
            value = MISSING
        self.counters.count(key, hit=value is not MISSING)
        return default if value is MISSING else value

    def set_versioned(
        self,
        key: str,
        value: Any,
        ttl: int | str | None,
        *,
        version_key: str,
        also: Queue | None = None,
    ) -> bool:
        """Store ``value`` tagged with the current version of ``version_key``,
        with the commands ``also`` queues in the same MULTI block.

        Only for a value computed after that version was read; read-through
        callers use fetch(), which reads the version before computing."""

        def store(client: redis.Redis) -> bool:
            with client.pipeline(transaction=True) as pipe:
                pipe.set(key, data, ex=ttl_for(ttl))
                if also is not None:
                    also(pipe)
                return bool(pipe.execute()[0])

        try:
            _, _, version = self._read(key, version_key)
            data = encode({"version": version, "value": value})
            return self._call(store)
        except CacheUnavailable:
            return False

    def execute(self, operation: Callable[[redis.Redis], R]) -> R:
        """``operation(client)`` behind the breaker: raises CacheUnavailable
        (and opens the breaker) when Redis fails."""
        return self._call(operation)

    def update_versioned(
        self,
        key: str,
        change: Callable[[redis.client.Pipeline, Any], tuple[Any, Queue | None]],
        *,
        watch: Sequence[str] = (),
    ) -> None:
        """Rewrite the versioned value of ``key`` atomically, keeping its version
        tag (valid or not) and its TTL.

        ``change(pipe, value)`` runs under WATCH of ``key`` and ``watch``
        (``pipe`` executes at once); ``value`` is None for an absent key, a
        tombstone or an unversioned value. It returns the new value (None: leave
        the key) and commands to queue beside it (or None). Retried when a
        watched key changes; raises CacheUnavailable when Redis fails or the
        key keeps changing.
        """

        def attempt(client: redis.Redis) -> None:
            with client.pipeline(transaction=True) as pipe:
                for _ in range(WATCH_ATTEMPTS):
                    try:
                        pipe.watch(key, *watch)
                        envelope = decode(pipe.get(key))
                        versioned = isinstance(envelope, dict) and "version" in envelope
                        new, queue = change(
                            pipe, envelope["value"] if versioned else None
                        )
                        new = new if versioned else None
                        if new is None and queue is None:
                            pipe.unwatch()
                            return
                        pipe.multi()
                        if new is not None:
                            data = encode(
                                {"version": envelope["version"], "value": new}
                            )
                            pipe.set(key, data, keepttl=True)
                        if queue is not None:
                            queue(pipe)
                        pipe.execute()
                        return
                    except redis.WatchError:
                        continue
            raise CacheUnavailable(f"{key} kept changing")

        self._call(attempt)


cache_service = CacheService()


def cache_stats() -> dict[str, dict[str, float]]:
    """{namespace: {"hits", "misses", "hit_rate"}} for this process, no Redis call."""
    return cache_service.counters.snapshot()


# --- decorators in the spirit of the seed's @Cacheable / @CacheEvict ---------
KeySpec = str | Callable[..., str]


def _key_builder(func: Callable, spec: KeySpec) -> Callable[..., str]:
    """A key from the call's arguments: a callable gets them as passed; a string
    is formatted with them by name (``"salon:{salon_id}"``), static if no braces."""
    if callable(spec):
        return spec
    signature = inspect.signature(func)

    def build(*args, **kwargs) -> str:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return spec.format(**bound.arguments)

    return build


def cacheable(
    *, key: KeySpec, ttl: int | str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Cache the function's result under ``key`` for ``ttl`` (seconds or a
    setting's name). Works on functions and methods; keeps the signature."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        build = _key_builder(func, key)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return cache_service.get_or_set(
                build(*args, **kwargs), lambda: func(*args, **kwargs), ttl
            )

        return wrapper

    return decorate


def cache_evict(
    *, keys: KeySpec | list[KeySpec]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Invalidate ``keys`` after the function returns and its transaction commits
    (nothing when it raises or the transaction rolls back)."""
    specs = keys if isinstance(keys, list) else [keys]

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        builders = [_key_builder(func, spec) for spec in specs]

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            result = func(*args, **kwargs)
            names = [build(*args, **kwargs) for build in builders]
            transaction.on_commit(lambda: cache_service.invalidate(*names))
            return result

        return wrapper

    return decorate
