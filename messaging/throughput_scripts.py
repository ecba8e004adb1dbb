"""The throughput governor's Lua (messaging/throughput.py): each call is one
atomic round trip on the broker's Redis, on Redis server time."""

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
#       spread_burst (0: off), then one phone number id per send.
# Returns: server time, then (granted 0/1, retry_after in microseconds) per send.
ACQUIRE = (
    _PRELUDE
    + """
local rate, window, floor_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, recovery = tonumber(ARGV[4]), tonumber(ARGV[5])
local pi, pb, seen_ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local sb, horizon = tonumber(ARGV[9]), tonumber(ARGV[10])
local phones, tats, order, out = {}, {}, {}, {us(now)}
for i = 1, (#KEYS - 1) / 3 do
  local win, ctl, pk = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local st = phones[win]
  if not st then
    redis.call('ZREMRANGEBYSCORE', win, '-inf', us(now - window))
    local eff = effective_rate(ctl, rate, floor_rate, hold, recovery)
    st = {ctl = ctl, count = redis.call('ZCARD', win), granted = 0, denied = 0,
          limit = math.max(1, math.floor(eff * window / 1000000 + 1e-9)),
          pid = ARGV[10 + i], times = {}}
    if sb > 0 then
      -- Spreading: a slot every window/limit, sb at once, reserved up to
      -- horizon ahead (the sender sleeps until its slot).
      st.interval = window / st.limit
      st.tat = math.max(tonumber(redis.call('HGET', ctl, 'tat') or 0), now)
      st.vtat = st.tat
    end
    phones[win] = st
    order[#order + 1] = win
  end
  local tat = tats[pk]
  if not tat then tat = tonumber(redis.call('GET', pk) or 0) end
  tat = math.max(tat, now)
  local pair_wait = tat - now - (pb - 1) * pi
  local free = st.limit - st.count - st.granted > 0
  local spread_wait = 0
  if st.interval then spread_wait = st.vtat - now - (sb - 1) * st.interval end
  if free and pair_wait <= 0 and spread_wait <= horizon then
    st.granted = st.granted + 1
    tats[pk] = tat + pi
    local slot_at = math.max(spread_wait, 0)
    if st.interval then
      st.tat = st.vtat + st.interval
      st.vtat = st.tat
    end
    st.times[#st.times + 1] = now + slot_at
    out[#out + 1] = 1
    out[#out + 1] = math.ceil(slot_at)
  else
    local wait = math.max(pair_wait, spread_wait - horizon, 0)
    if st.interval and spread_wait > horizon and pair_wait <= 0 then
      st.vtat = st.vtat + st.interval  -- the next denied send waits one more
    end
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
      args[#args + 1] = us(st.times[seq - last + st.granted])
      args[#args + 1] = seq
      if #args >= 400 or seq == last then
        redis.call('ZADD', win, unpack(args))
        args = {}
      end
    end
    redis.call('PEXPIRE', win, math.ceil(window / 1000) + 1000)
    if st.interval then redis.call('HSET', st.ctl, 'tat', us(st.tat)) end
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
# ARGV: code, rate, window, floor, hold, recovery, pair_interval, pair_burst, seen_ttl,
#       backoff (the fraction of the rate kept).
# Returns the suggested retry_after in microseconds.
PENALIZE = (
    _PRELUDE
    + """
local code, rate, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local floor_rate, hold = tonumber(ARGV[4]), tonumber(ARGV[5])
local recovery = tonumber(ARGV[6])
local pi, pb, seen_ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local backoff = tonumber(ARGV[10])
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
  local factor = math.max(floor_rate, eff * backoff) / rate
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
STATE = (
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
