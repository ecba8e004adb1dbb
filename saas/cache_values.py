"""What the cache stores and how it counts: values encoded as JSON when JSON
round-trips them exactly (so ``redis-cli GET`` shows them), signed pickle
otherwise (saas/cache.py says why);
TTLs by setting name; hit/miss counters per namespace; the types callers of
saas/cache.py share."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import pickle
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from django.conf import settings

logger = logging.getLogger("saas.cache")

_SIGNED_PICKLE_MARK = b"\x01"  # then a 32-byte HMAC-SHA256, then the pickle
_SIGNATURE_BYTES = 32
#: What ``decode`` returns for an absent key or a tombstone.
MISSING = object()
#: WATCH/MULTI attempts before giving up on a key other clients keep changing.
WATCH_ATTEMPTS = 20

#: Commands a caller queues in a MULTI block.
Queue = Callable[[redis.client.Pipeline], None]


class CacheUnavailable(Exception):
    """The breaker is open or Redis failed: callers fall back to the database."""


class CacheBusy(CacheUnavailable):
    """This process's connection pool is exhausted: Redis is fine, so the breaker
    stays closed."""


def setting_or(name: str, default: float) -> float:
    return getattr(settings, name, default)


def ttl_for(ttl: int | str | None) -> int:
    """Seconds: an int, the name of a setting, or None for CACHE_TTL_SECONDS."""
    if ttl is None:
        return settings.CACHE_TTL_SECONDS
    if isinstance(ttl, str):
        return getattr(settings, ttl)
    return ttl


def namespace_of(key: str) -> str:
    return key.split(":", 1)[0]


def encode(value: Any) -> bytes:
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        if json.loads(text) == value and _same_shape(json.loads(text), value):
            return text.encode()
    except (TypeError, ValueError):
        pass
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _SIGNED_PICKLE_MARK + _signature(data) + data


@functools.cache
def _signing_key(secret: str) -> bytes:
    return hashlib.sha256(b"saas.cache:" + secret.encode()).digest()


def _signature(data: bytes) -> bytes:
    return hmac.new(_signing_key(settings.SECRET_KEY), data, hashlib.sha256).digest()


def _same_shape(decoded: Any, value: Any) -> bool:
    """JSON equality is loose (1 == 1.0 == True, tuples vs lists): check types."""
    if type(decoded) is not type(value) and not (
        isinstance(value, dict) and isinstance(decoded, dict)
    ):
        return False
    if isinstance(value, dict):
        return all(_same_shape(decoded[k], v) for k, v in value.items())
    if isinstance(value, list):
        return all(_same_shape(d, v) for d, v in zip(decoded, value, strict=True))
    return True


def decode(raw: bytes | None) -> Any:
    """The stored value, or MISSING for an absent key or a tombstone."""
    if raw is None or raw.startswith(b"\x00"):
        return MISSING
    if raw.startswith(_SIGNED_PICKLE_MARK):
        start = len(_SIGNED_PICKLE_MARK)
        signature, data = (
            raw[start : start + _SIGNATURE_BYTES],
            raw[start + _SIGNATURE_BYTES :],
        )
        if hmac.compare_digest(signature, _signature(data)):
            return pickle.loads(data)
        logger.warning("Cache value with a bad signature ignored (not unpickled)")
        return MISSING
    if raw[:1] not in _JSON_STARTS:
        logger.warning("Cache value neither JSON nor signed ignored (not unpickled)")
        return MISSING
    return json.loads(raw)


_JSON_STARTS = frozenset(b'{["-0123456789tfn'[i : i + 1] for i in range(17))


@dataclass
class Counters:
    lock: threading.Lock = field(default_factory=threading.Lock)
    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, *, hit: bool) -> None:
        namespace = namespace_of(key)
        counts = self.hits if hit else self.misses
        with self.lock:
            counts[namespace] = counts.get(namespace, 0) + 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Cache %s: %s", "hit" if hit else "miss", key)

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self.lock:
            hits, misses = dict(self.hits), dict(self.misses)
        stats = {}
        for namespace in sorted(set(hits) | set(misses)):
            h, m = hits.get(namespace, 0), misses.get(namespace, 0)
            stats[namespace] = {
                "hits": h,
                "misses": m,
                "hit_rate": round(h / (h + m), 4) if h + m else 0.0,
            }
        return stats

    def reset(self) -> None:
        with self.lock:
            self.hits.clear()
            self.misses.clear()


@dataclass
class Fetched:
    value: Any
    hit: bool


class StoreHook(Protocol):
    """How ``fetch`` stores a computed value when compare-and-set is not enough.

    ``begin(client)`` runs right before computing; what it returns is passed
    as ``seen`` to ``prepare(pipe, value, seen)``, which runs under WATCH of
    ``keys`` (``pipe`` executes at once) and returns the value to store and
    serve with the commands to queue beside it, or None not to store.
    """

    keys: Sequence[str]

    def begin(self, client: redis.Redis) -> Any: ...

    def prepare(
        self, pipe: redis.client.Pipeline, value: Any, seen: Any
    ) -> tuple[Any, Queue] | None: ...
