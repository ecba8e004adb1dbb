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
``throughput_penalize`` halves the number's effective rate (not below
``WHATSAPP_THROUGHPUT_FLOOR``), holds it, then adds it back linearly; 131056
pushes only the pair's next allowed time out.

Deferring a Celery task without spending an attempt (``self.retry`` counts one)::

    grant = throughput_acquire(phone_number_id, recipient, rate=salon_rate)
    if not grant:
        throughput_deferred(phone_number_id)
        self.signature_from_request(
            countdown=grant.retry_after, retries=self.request.retries
        ).apply_async()
        raise Ignore()  # celery.exceptions.Ignore: this delivery is done

The copy keeps the task id, queue, priority and attempt count. A sender thread
sleeps ``grant.retry_after`` and asks again instead.

Settings (all optional): WHATSAPP_THROUGHPUT_PER_SECOND (80), _WINDOW_SECONDS (1),
_FLOOR (1/s), _PENALTY_HOLD_SECONDS (5), _RECOVERY_SECONDS (20: time to add back
the full rate), _PAIR_INTERVAL_SECONDS (6), _PAIR_BURST (2).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from django.conf import settings

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


_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function us(x) return string.format('%.0f', x) end
local function effective_rate(ctl, rate, floor_rate, hold, recovery)
  local f, at = unpack(redis.call('HMGET', ctl, 'factor', 'pen_at'))
  if not f then return rate end
  local factor = tonumber(f) + math.max(0, now - tonumber(at) - hold) / recovery
  if factor >= 1 then return rate end
  return math.min(rate, math.max(floor_rate, rate * factor))
end
"""

# KEYS: numbers, then (win, ctl, pair) per send.
# ARGV: rate, window, floor, hold, recovery, pair_interval, pair_burst, seen_ttl,
#       then one phone number id per send.
# Returns: server time, then (granted 0/1, retry_after in microseconds) per send.
_ACQUIRE = (
    _PRELUDE
    + """
local rate, window, floor_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, recovery = tonumber(ARGV[4]), tonumber(ARGV[5])
local pi, pb, seen_ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local phones, tats, order, out = {}, {}, {}, {us(now)}
for i = 1, (#KEYS - 1) / 3 do
  local win, ctl, pk = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local st = phones[win]
  if not st then
    redis.call('ZREMRANGEBYSCORE', win, '-inf', us(now - window))
    local eff = effective_rate(ctl, rate, floor_rate, hold, recovery)
    st = {ctl = ctl, count = redis.call('ZCARD', win), granted = 0, denied = 0,
          limit = math.max(1, math.floor(eff * window / 1000000 + 1e-9)),
          pid = ARGV[8 + i]}
    phones[win] = st
    order[#order + 1] = win
  end
  local tat = tats[pk]
  if not tat then tat = tonumber(redis.call('GET', pk) or 0) end
  tat = math.max(tat, now)
  local pair_wait = tat - now - (pb - 1) * pi
  local free = st.limit - st.count - st.granted > 0
  if free and pair_wait <= 0 then
    st.granted = st.granted + 1
    tats[pk] = tat + pi
    out[#out + 1] = 1
    out[#out + 1] = 0
  else
    local wait = math.max(pair_wait, 0)
    if not free then
      if not st.scores then
        st.scores = redis.call('ZRANGE', win, 0, -1, 'WITHSCORES')
      end
      local total = st.count + st.granted
      local idx = total - st.limit + st.denied
      local slot = idx % total
      local at = now
      if slot < st.count then at = tonumber(st.scores[2 * slot + 2]) end
      wait = math.max(wait, at + window * (math.floor(idx / total) + 1) - now)
      st.denied = st.denied + 1
    end
    out[#out + 1] = 0
    out[#out + 1] = math.ceil(wait)
  end
end
for _, win in ipairs(order) do
  local st = phones[win]
  if st.granted > 0 then
    local last = redis.call('HINCRBY', st.ctl, 'seq', st.granted)
    local args = {}
    for seq = last - st.granted + 1, last do
      args[#args + 1] = us(now)
      args[#args + 1] = seq
      if #args >= 400 or seq == last then
        redis.call('ZADD', win, unpack(args))
        args = {}
      end
    end
    redis.call('PEXPIRE', win, math.ceil(window / 1000) + 1000)
  end
  redis.call('EXPIRE', st.ctl, seen_ttl)
  redis.call('ZADD', KEYS[1], us(now), st.pid)
end
for pk, tat in pairs(tats) do
  redis.call('SET', pk, us(tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', us(now - seen_ttl * 1000000))
redis.call('EXPIRE', KEYS[1], seen_ttl)
return out
"""
)

# KEYS: ctl, pair (or the ctl again when no recipient).
# ARGV: code, rate, window, floor, hold, recovery, pair_interval, pair_burst, seen_ttl.
# Returns the suggested retry_after in microseconds.
_PENALIZE = (
    _PRELUDE
    + """
local code, rate, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local floor_rate, hold = tonumber(ARGV[4]), tonumber(ARGV[5])
local recovery = tonumber(ARGV[6])
local pi, pb, seen_ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
if code == '131056' then
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or 0), now + pb * pi)
  redis.call('SET', KEYS[2], us(tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  return math.ceil(tat - now - (pb - 1) * pi)
end
local last = tonumber(redis.call('HGET', KEYS[1], 'pen_at') or 0)
-- One multiplicative decrease per window: a burst of 130429s from many workers
-- is one signal, not one per worker.
if now - last >= window then
  local eff = effective_rate(KEYS[1], rate, floor_rate, hold, recovery)
  local factor = math.max(floor_rate, eff / 2) / rate
  redis.call('HSET', KEYS[1], 'factor', string.format('%.6f', factor),
             'pen_at', us(now))
end
redis.call('HSET', KEYS[1], 'last_130429', us(now))
redis.call('HINCRBY', KEYS[1], 'count_130429', 1)
redis.call('EXPIRE', KEYS[1], seen_ttl)
return window
"""
)

# KEYS: win, ctl. ARGV: rate, window, floor, hold, recovery.
_STATE = (
    _PRELUDE
    + """
local rate, window, floor_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, recovery = tonumber(ARGV[4]), tonumber(ARGV[5])
local eff = effective_rate(KEYS[2], rate, floor_rate, hold, recovery)
local used = redis.call('ZCOUNT', KEYS[1], '(' .. us(now - window), '+inf')
local deferred, last = unpack(redis.call('HMGET', KEYS[2], 'deferred', 'last_130429'))
return {us(now), string.format('%.6f', eff), used, deferred or '0', last or ''}
"""
)


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

    def args(self) -> list:
        return [self.rate, self.window, self.floor, self.hold, self.recovery]


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
        hold=micros(setting("PENALTY_HOLD_SECONDS", 5.0)),
        recovery=micros(setting("RECOVERY_SECONDS", 20.0)),
        pair_interval=micros(pair_interval or setting("PAIR_INTERVAL_SECONDS", 6.0)),
        pair_burst=int(pair_burst or setting("PAIR_BURST", 2)),
    )


def throughput_acquire_many(
    sends: Sequence[tuple[str, str]],
    *,
    rate: float | None = None,
    pair_interval: float | None = None,
    pair_burst: int | None = None,
) -> list[Acquisition]:
    """Take a token for each (phone_number_id, recipient) send, in order.

    One round trip for the whole batch. Each send is granted only if both its
    number and its pair have a token; a denied send takes neither and does not
    stop later sends (another customer) from being granted. ``rate`` applies to
    every number in the batch. Denied sends of one number get staggered
    ``retry_after`` values, in the order given (earliest due first).
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
        *(phone for phone, _ in sends),
    ]
    reply = _run(_ACQUIRE, keys, args)
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
    args = [code, *config.args(), config.pair_interval, config.pair_burst, SEEN_TTL]
    return _run(_PENALIZE, [ctl, pair], args) / 1e6


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
        _STATE,
        [window_key(phone_number_id), control_key(phone_number_id)],
        config.args(),
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
