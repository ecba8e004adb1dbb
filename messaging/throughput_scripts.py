"""The throughput governor's Lua (messaging/throughput.py): each call is one
atomic round trip on the broker's Redis, on Redis server time."""

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function us(x) return string.format('%.0f', x) end
-- The number's rate at ``when`` (default now): a penalty's reduced rate
-- coming back, or an idle number's slow start ramping up.
local function effective_rate(ctl, rate, floor_rate, hold, recovery, ss_from, ss_ramp,
                              when)
  when = when or now
  local f, at, ss = unpack(redis.call('HMGET', ctl, 'factor', 'pen_at', 'ss_at'))
  local factor = 1
  if f then
    factor = tonumber(f) + math.max(0, when - tonumber(at) - hold) / recovery
  end
  if ss then  -- slow start: an idle number ramps from ss_from over ss_ramp
    factor = math.min(factor, ss_from + (1 - ss_from) * (when - tonumber(ss)) / ss_ramp)
  end
  if factor >= 1 then return rate end
  return math.min(rate, math.max(floor_rate, rate * factor))
end
"""

# KEYS: numbers, then (win, ctl, pair) per send.
# ARGV: rate, window, floor, hold, recovery, pair_interval, pair_burst, seen_ttl,
#       spread_burst (0: off), spread_ahead (the horizon), slow start's
#       fraction and ramp, then one phone number id per send.
# Returns: server time, then (granted 0/1, retry_after in microseconds) per send.
ACQUIRE = (
    _PRELUDE
    + """
local rate, window, floor_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, recovery = tonumber(ARGV[4]), tonumber(ARGV[5])
local pi, pb, seen_ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local sb, horizon = tonumber(ARGV[9]), tonumber(ARGV[10])
local ss_from, ss_ramp = tonumber(ARGV[11]), tonumber(ARGV[12])
-- The most sends in a window at ``when``, at the rate of that time.
local function limit_at(ctl, when)
  local eff = effective_rate(ctl, rate, floor_rate, hold, recovery, ss_from, ss_ramp,
                             when)
  return math.max(1, math.floor(eff * window / 1000000 + 1e-9))
end
-- Spreading: the earliest slot at or after s whose trailing window
-- (slot - window, slot] holds fewer than the number's limit then, counting
-- slots other senders reserved ahead and this call's grants.
local function spread_slot(st, win, s)
  for _ = 1, 8 do
    local low = s - window
    local n = redis.call('ZCOUNT', win, '(' .. us(low), us(s))
    local oldest = nil
    if n > 0 then
      oldest = tonumber(redis.call('ZRANGEBYSCORE', win, '(' .. us(low), us(s),
                                   'WITHSCORES', 'LIMIT', 0, 1)[2])
    end
    for _, t in ipairs(st.times) do
      if t > low and t <= s then
        n = n + 1
        if not oldest or t < oldest then oldest = t end
      end
    end
    if n < limit_at(st.ctl, s) then return s end
    s = oldest + window
  end
  return nil
end
local phones, tats, order, out = {}, {}, {}, {us(now)}
for i = 1, (#KEYS - 1) / 3 do
  local win, ctl, pk = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local st = phones[win]
  if not st then
    redis.call('ZREMRANGEBYSCORE', win, '-inf', us(now - window))
    local last_tat = tonumber(redis.call('HGET', ctl, 'tat') or 0)
    if sb > 0 and last_tat < now - window then
      -- Idle for a window: start slow. The first sends open new connections
      -- and arrive late, bunched with the ones after them.
      redis.call('HSET', ctl, 'ss_at', us(now))
    end
    local eff = effective_rate(ctl, rate, floor_rate, hold, recovery, ss_from, ss_ramp)
    st = {ctl = ctl, count = redis.call('ZCARD', win), granted = 0, denied = 0,
          limit = math.max(1, math.floor(eff * window / 1000000 + 1e-9)),
          pid = ARGV[12 + i], times = {}}
    if sb > 0 then
      -- Spreading: a slot every window/limit (at the rate of the slot's
      -- time), sb at once, reserved up to horizon ahead (the sender sleeps
      -- until its slot); no trailing window of a granted slot holds more
      -- than the limit.
      st.spread = true
      st.tat = math.max(last_tat, now)
      st.vtat = st.tat
    end
    phones[win] = st
    order[#order + 1] = win
  end
  local tat = tats[pk]
  if not tat then tat = tonumber(redis.call('GET', pk) or 0) end
  tat = math.max(tat, now)
  local pair_wait = tat - now - (pb - 1) * pi
  local granted, slot_at, wait = false, 0, 0
  if st.spread then
    local interval = window / limit_at(ctl, st.vtat)
    local due = now + math.max(st.vtat - now - (sb - 1) * interval, 0)
    local s = spread_slot(st, win, due)
    local open = s ~= nil  -- nil: still full after 8 pushes; ask again later
    s = s or (due + window)
    if pair_wait <= 0 and open and s - now <= horizon then
      granted, slot_at = true, s - now
      interval = window / limit_at(ctl, s)
      st.tat = math.max(st.vtat, s + (sb - 1) * interval) + interval
      st.vtat = st.tat
    else
      wait = math.max(pair_wait, s - now - horizon, 0)
      if pair_wait <= 0 then
        st.vtat = st.vtat + interval  -- the next denied send waits one more
      end
    end
  elseif st.limit - st.count - st.granted > 0 and pair_wait <= 0 then
    granted = true
  else
    wait = math.max(pair_wait, 0)
    if st.limit - st.count - st.granted <= 0 then
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
  end
  if granted then
    st.granted = st.granted + 1
    tats[pk] = tat + pi
    st.times[#st.times + 1] = now + slot_at
    out[#out + 1] = 1
    out[#out + 1] = math.ceil(slot_at)
  else
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
    redis.call('PEXPIRE', win, math.ceil((window + horizon) / 1000) + 1000)
    if st.spread then redis.call('HSET', st.ctl, 'tat', us(st.tat)) end
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
#       backoff (the fraction of the rate kept), slow start's fraction and ramp.
# Returns the suggested retry_after in microseconds.
PENALIZE = (
    _PRELUDE
    + """
local code, rate, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local floor_rate, hold = tonumber(ARGV[4]), tonumber(ARGV[5])
local recovery = tonumber(ARGV[6])
local pi, pb, seen_ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local backoff = tonumber(ARGV[10])
local ss_from, ss_ramp = tonumber(ARGV[11]), tonumber(ARGV[12])
if code == '131056' then
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or 0), now + pb * pi)
  redis.call('SET', KEYS[2], us(tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  return math.ceil(tat - now - (pb - 1) * pi)
end
local last = tonumber(redis.call('HGET', KEYS[1], 'pen_at') or 0)
-- One multiplicative decrease per window: a burst of 130429s from many workers
-- is one signal, not one per worker.
if now - last >= window then
  local eff = effective_rate(KEYS[1], rate, floor_rate, hold, recovery,
                             ss_from, ss_ramp)
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

# KEYS: win, ctl. ARGV: rate, window, floor, hold, recovery, slow start's
#       fraction and ramp.
STATE = (
    _PRELUDE
    + """
local rate, window, floor_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, recovery = tonumber(ARGV[4]), tonumber(ARGV[5])
local eff = effective_rate(KEYS[2], rate, floor_rate, hold, recovery,
                           tonumber(ARGV[6]), tonumber(ARGV[7]))
local used = redis.call('ZCOUNT', KEYS[1], '(' .. us(now - window), '+inf')
local deferred, last = unpack(redis.call('HMGET', KEYS[2], 'deferred', 'last_130429'))
return {us(now), string.format('%.6f', eff), used, deferred or '0', last or ''}
"""
)
