"""Throughput governor: Meta's send limits, shared by every worker and host.

Two limits, checked together by one Lua script in the broker's Redis (one round
trip per acquisition, or per batch), on Redis server time so skewed host clocks
share one bucket:

- per business number (130429): at most ``rate`` sends in any ``window`` (1 s).
  Every token taken comes back exactly one window later, so a full bucket is one
  second's worth and no one-second window ever holds more than ``rate`` sends.
  (A continuously refilled bucket of one second's worth would allow up to twice
  the rate in a window, and Meta counts per window.)
- per (business number, customer) pair (131056): Meta documents about one
  message every 6 s with a burst that borrows from later; a GCRA bucket with
  ``pair_interval`` (6 s) and ``pair_burst`` (2) stays within that.

A send gets a token from both or from neither. When Meta still answers 130429,
``throughput_penalize`` cuts the number's effective rate by
``WHATSAPP_THROUGHPUT_BACKOFF`` (0.85 of it is kept: the governor already
paces under the limit, so a 130429 means arrival jitter, not a rate far too
high), not below ``WHATSAPP_THROUGHPUT_FLOOR``, holds it, then adds it back
linearly; 131056 pushes only the pair's next allowed time out. A number idle
for a window starts slow (``WHATSAPP_THROUGHPUT_SLOW_START`` of its rate,
the full rate after ``_SLOW_START_SECONDS``): its first sends open new
connections and arrive late, bunched with the ones after them.

Callers go through messaging/governed_sending.py (a sender thread sleeps
``retry_after`` and asks again, or defers the send); a Celery task defers
without spending an attempt with queues.publish.job_defer.

Settings: WHATSAPP_THROUGHPUT_PER_SECOND (80), _WINDOW_SECONDS (1), _FLOOR (1/s),
_BACKOFF (0.85), _PENALTY_HOLD_SECONDS (1), _RECOVERY_SECONDS (to add back the
full rate: 5), _SLOW_START (0.5), _SLOW_START_SECONDS (1.5),
_PAIR_INTERVAL_SECONDS (6), _PAIR_BURST (2).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from django.conf import settings

from messaging.throughput_scripts import ACQUIRE, PENALIZE, STATE
from saas.redis import queue_redis

# Every key the governor writes, and how long it outlives its last use.
KEY_PREFIX = "wa:tput:"
NUMBERS_KEY = KEY_PREFIX + "numbers"  # zset phone id -> last seen; TTL 1 h
WINDOW_KEY = KEY_PREFIX + "{phone}:win"  # zset of grants in the window; TTL window+1 s
CONTROL_KEY = KEY_PREFIX + "{phone}:ctl"  # hash: seq, penalty, counters; TTL 1 h
PAIR_KEY = KEY_PREFIX + "{phone}:pair:{recipient}"  # GCRA time; TTL until idle
SEEN_TTL = 3600

DEFAULT_RATE = 80
PENALIZED_CODES = {130429, 131056}


def window_key(phone_number_id: str) -> str:
    return WINDOW_KEY.format(phone=phone_number_id)


def control_key(phone_number_id: str) -> str:
    return CONTROL_KEY.format(phone=phone_number_id)


def pair_key(phone_number_id: str, recipient: str) -> str:
    return PAIR_KEY.format(phone=phone_number_id, recipient=recipient)


@cache
def _script(source: str):
    return queue_redis().register_script(source)


def _run(source: str, keys: list[str], args: list) -> list | int:
    return _script(source)(keys=keys, args=args, client=queue_redis())


@dataclass(frozen=True, slots=True)
class Acquisition:
    """A governor decision; truthy when the send may go now."""

    granted: bool
    retry_after: float  # seconds until a token is there for this send; 0 if granted
    at: float  # Redis server time of the decision (epoch seconds)

    def __bool__(self) -> bool:
        return self.granted


@dataclass(frozen=True, slots=True)
class _Config:
    rate: float  # messages per second
    window: int  # durations in microseconds, as the script counts them
    floor: float
    hold: int
    recovery: int
    pair_interval: int
    pair_burst: int
    backoff: float  # the fraction of the rate kept after a 130429
    slow_start: float  # the fraction of the rate an idle number starts at
    slow_start_ramp: int  # ... and how long it takes to reach the full rate

    def args(self) -> list:
        return [self.rate, self.window, self.floor, self.hold, self.recovery]

    def slow_start_args(self) -> list:
        return [self.slow_start, self.slow_start_ramp]


def _config(
    rate: float | None = None,
    pair_interval: float | None = None,
    pair_burst: int | None = None,
) -> _Config:
    def setting(name: str, default: float) -> float:
        return getattr(settings, "WHATSAPP_THROUGHPUT_" + name, default)

    def micros(seconds: float) -> int:
        return max(1, round(float(seconds) * 1e6))

    rate = float(rate or setting("PER_SECOND", DEFAULT_RATE))
    if rate < 1:
        raise ValueError("throughput rate must be at least 1 message per second")
    return _Config(
        rate=rate,
        window=micros(setting("WINDOW_SECONDS", 1.0)),
        floor=min(rate, float(setting("FLOOR", 1.0))),
        hold=micros(setting("PENALTY_HOLD_SECONDS", 1.0)),
        recovery=micros(setting("RECOVERY_SECONDS", 5.0)),
        pair_interval=micros(pair_interval or setting("PAIR_INTERVAL_SECONDS", 6.0)),
        pair_burst=int(pair_burst or setting("PAIR_BURST", 2)),
        backoff=min(1.0, max(0.05, float(setting("BACKOFF", 0.85)))),
        slow_start=min(1.0, max(0.05, float(setting("SLOW_START", 0.5)))),
        slow_start_ramp=micros(setting("SLOW_START_SECONDS", 1.5)),
    )


def throughput_acquire_many(
    sends: Sequence[tuple[str, str]],
    *,
    rate: float | None = None,
    pair_interval: float | None = None,
    pair_burst: int | None = None,
    spread_burst: int = 0,
    spread_ahead: float = 0.0,
) -> list[Acquisition]:
    """Take a token for each (phone_number_id, recipient) send, in order.

    One round trip for the whole batch. Each send is granted only if both its
    number and its pair have a token; a denied send takes neither and does not
    stop later sends (another customer) from being granted. ``rate`` applies to
    every number in the batch. Denied sends of one number get staggered
    ``retry_after`` values, in the order given (earliest due first).

    ``spread_burst`` (0: off) also spaces a number's grants, one every
    window/rate and that many at once at most: Meta counts sends on arrival,
    and a second's worth granted at once arrives spread by jitter, so the
    burst granted a window later can land inside Meta's window of the first.
    With ``spread_ahead`` a slot up to that many seconds ahead is granted and
    reserved: ``retry_after`` of a granted send is when to send it.
    """
    if not sends:
        return []
    config = _config(rate, pair_interval, pair_burst)
    keys = [NUMBERS_KEY]
    for phone, recipient in sends:
        keys += [window_key(phone), control_key(phone), pair_key(phone, recipient)]
    args = [
        *config.args(),
        config.pair_interval,
        config.pair_burst,
        SEEN_TTL,
        max(0, int(spread_burst)),
        max(0, round(spread_ahead * 1e6)),
        *config.slow_start_args(),
        *(phone for phone, _ in sends),
    ]
    reply = _run(ACQUIRE, keys, args)
    at = int(reply[0]) / 1e6
    return [
        Acquisition(granted=bool(reply[i]), retry_after=reply[i + 1] / 1e6, at=at)
        for i in range(1, len(reply), 2)
    ]


def throughput_acquire(
    phone_number_id: str,
    recipient: str,
    *,
    rate: float | None = None,
    pair_interval: float | None = None,
    pair_burst: int | None = None,
    spread_burst: int = 0,
    spread_ahead: float = 0.0,
) -> Acquisition:
    """Take one token for a send from ``phone_number_id`` to ``recipient``.

    ``rate`` is the number's messages per second when Meta upgraded it (default
    ``WHATSAPP_THROUGHPUT_PER_SECOND``, 80).
    """
    return throughput_acquire_many(
        [(phone_number_id, recipient)],
        rate=rate,
        pair_interval=pair_interval,
        pair_burst=pair_burst,
        spread_burst=spread_burst,
        spread_ahead=spread_ahead,
    )[0]


def throughput_penalize(
    phone_number_id: str,
    code: int | str,
    *,
    recipient: str | None = None,
    rate: float | None = None,
    pair_interval: float | None = None,
    pair_burst: int | None = None,
) -> float:
    """Meta answered 130429 (number) or 131056 (pair, needs ``recipient``).

    Returns how many seconds to defer the send before acquiring again.
    """
    code = int(code)
    if code not in PENALIZED_CODES:
        raise ValueError(f"not a throughput error code: {code}")
    if code == 131056 and not recipient:
        raise ValueError("131056 is a pair limit: pass the recipient")
    config = _config(rate, pair_interval, pair_burst)
    ctl = control_key(phone_number_id)
    pair = pair_key(phone_number_id, recipient) if recipient else ctl
    args = [
        code,
        *config.args(),
        config.pair_interval,
        config.pair_burst,
        SEEN_TTL,
        config.backoff,
        *config.slow_start_args(),
    ]
    return _run(PENALIZE, [ctl, pair], args) / 1e6


def throughput_deferred(phone_number_id: str, count: int = 1) -> int:
    """Count sends deferred for want of a token; returns the running total."""
    client = queue_redis()
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(control_key(phone_number_id), "deferred", count)
        pipe.expire(control_key(phone_number_id), SEEN_TTL)
        return pipe.execute()[0]


def throughput_state(phone_number_id: str, *, rate: float | None = None) -> dict:
    """The number's pacing state for the queue page and /metrics."""
    config = _config(rate)
    now, effective, used, deferred, last = _run(
        STATE,
        [window_key(phone_number_id), control_key(phone_number_id)],
        config.args() + config.slow_start_args(),
    )
    effective = float(effective)
    limit = max(1, math.floor(effective * config.window / 1e6 + 1e-9))
    return {
        "phone_number_id": phone_number_id,
        "rate": config.rate,
        "effective_rate": effective,
        "tokens": max(0, limit - int(used)),
        "sent_in_window": int(used),
        "deferred": int(deferred),
        "last_130429": int(last) / 1e6 if last else None,
        "at": int(now) / 1e6,
    }


def throughput_numbers() -> list[str]:
    """Business numbers that asked for a token in the last hour, latest first."""
    client = queue_redis()
    now, _ = client.time()
    return client.zrevrangebyscore(NUMBERS_KEY, "+inf", now - SEEN_TTL)
