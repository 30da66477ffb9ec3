"""The Lua scripts of :class:`serve.gateway.ratelimit.RedisStore`: the same algorithm as
:class:`serve.gateway.ratelimit.MemoryStore`, run atomically inside Redis/Valkey.

Data, per counter (``P`` is the store's key prefix, ``NAME`` the counter's name):

- ``P log:NAME``  sorted set, one member per entry: ``"<ticket>|<cost>"`` (reservations) or
  ``"<ticket>+|<cost>"`` (usage settled into a window), scored by the entry's unix time. An entry
  is live while ``now - score < ttl``; the set expires ``ttl + 1`` s after its last write.
- ``P sum:NAME``  the running total of the live entries' costs (``INCRBYFLOAT``), kept so a check
  reads one number instead of scanning the set; it is rebuilt from the set if it ever goes missing
  (eviction) and deleted whenever the set empties, so float noise cannot accumulate.
- ``P used:NAME`` budgets only: usage settled into the budget's period, expiring at
  ``settled_until`` (sent as milliseconds from the caller's ``now``, so the caller's clock, not
  the server's, decides).

Each script call is one Redis transaction, so check-then-reserve cannot interleave with another
gateway replica. Cost per call: O(log n) per counter plus the entries that expired since the last
call; a refusal also scans entries (at most MAX_SCAN) to compute when the request would fit.
"""

from __future__ import annotations

import hashlib

MAX_SCAN = 10_000

_COMMON = """
local now_s = ARGV[1]
local now = tonumber(now_s)
local ticket = ARGV[2]
local n = tonumber(ARGV[3])

local function num(x)
  return string.format('%.17g', x)
end

local function cost_of(member)
  return tonumber(string.match(member, '|([^|]*)$'))
end

-- Add delta to the running total of log, unless that total is missing (then the next check
-- rebuilds it from the log) or the log is now empty (then the total goes too).
local function adjust(log, sum, delta)
  if redis.call('EXISTS', log) == 0 then
    redis.call('DEL', sum)
  elseif redis.call('EXISTS', sum) == 1 then
    redis.call('INCRBYFLOAT', sum, num(delta))
  end
end

local function add(log, sum, member, cost_s, ttl)
  redis.call('ZADD', log, now_s, member)
  adjust(log, sum, tonumber(cost_s))
  if redis.call('EXISTS', sum) == 0 and redis.call('ZCARD', log) == 1 then
    redis.call('SET', sum, cost_s)
  end
  local ms = math.ceil(ttl * 1000) + 1000
  redis.call('PEXPIRE', log, ms)
  redis.call('PEXPIRE', sum, ms)
end
"""

RESERVE = (
    _COMMON
    + """
-- KEYS: log, sum, used for each counter. ARGV after the first three, four per counter:
-- limit, cost, ttl_s, settled_ttl_ms (0: a window; else a budget with a settled total).
-- Returns {admitted, then per counter: used (before this request), wait_s, reset_s}.
local MAX_SCAN = """
    + str(MAX_SCAN)
    + """

local function fits(used, cost, limit)
  return used < limit and used + cost <= limit
end

local function live_total(log, sum, ttl)
  local cutoff = now - ttl
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
  end
  if redis.call('EXISTS', log) == 0 then
    redis.call('DEL', sum)
    return 0
  end
  local total = redis.call('GET', sum)
  if not total then
    local t = 0
    for _, m in ipairs(redis.call('ZRANGE', log, 0, -1)) do
      t = t + cost_of(m)
    end
    local pttl = redis.call('PTTL', log)
    if pttl > 0 then
      redis.call('SET', sum, num(t), 'PX', pttl)
    else
      redis.call('SET', sum, num(t))
    end
    return t
  end
  total = tonumber(total)
  if #gone > 0 then
    local freed = 0
    for _, m in ipairs(gone) do
      freed = freed + cost_of(m)
    end
    total = tonumber(redis.call('INCRBYFLOAT', sum, num(-freed)))
  end
  return total
end

-- Seconds until expiries alone let the request fit; -1 if they never do.
local function wait_for(log, used, base, cost, limit, ttl)
  if not fits(base, cost, limit) then
    return -1
  end
  local freed = 0
  local entries = redis.call('ZRANGE', log, 0, MAX_SCAN - 1, 'WITHSCORES')
  for j = 1, #entries, 2 do
    freed = freed + cost_of(entries[j])
    if fits(used - freed, cost, limit) then
      return tonumber(entries[j + 1]) + ttl - now
    end
  end
  return ttl  -- beyond the scan: an upper bound, every live entry is gone by then
end

local used, base, ok = {}, {}, true
for i = 1, n do
  local a = 3 + 4 * (i - 1)
  local limit, cost, ttl = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  base[i] = 0
  if ARGV[a + 4] ~= '0' then
    base[i] = tonumber(redis.call('GET', KEYS[3 * i]) or '0')
  end
  used[i] = live_total(KEYS[3 * i - 2], KEYS[3 * i - 1], ttl) + base[i]
  if not fits(used[i], cost, limit) then
    ok = false
  end
end

if ok then
  for i = 1, n do
    local a = 3 + 4 * (i - 1)
    if tonumber(ARGV[a + 2]) > 0 then
      add(KEYS[3 * i - 2], KEYS[3 * i - 1], ticket .. '|' .. ARGV[a + 2], ARGV[a + 2], tonumber(ARGV[a + 3]))
    end
  end
end

local reply = {ok and 1 or 0}
for i = 1, n do
  local a = 3 + 4 * (i - 1)
  local limit, cost, ttl = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local log = KEYS[3 * i - 2]
  local wait = 0
  if not ok and not fits(used[i], cost, limit) then
    wait = wait_for(log, used[i], base[i], cost, limit, ttl)
  end
  local reset = 0
  local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  if #oldest > 0 then
    reset = tonumber(oldest[2]) + ttl - now
  end
  reply[#reply + 1] = num(used[i])
  reply[#reply + 1] = num(wait)
  reply[#reply + 1] = num(reset)
end
return reply
"""
)

SETTLE = (
    _COMMON
    + """
-- KEYS: log, sum, used for each counter. ARGV after the first three, four per counter:
-- reserved cost, actual usage, ttl_s, settled_ttl_ms (0: a window).
for i = 1, n do
  local a = 3 + 4 * (i - 1)
  local log, sum, settled = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local reserved_s, actual_s = ARGV[a + 1], ARGV[a + 2]
  local ttl, settled_ms = tonumber(ARGV[a + 3]), ARGV[a + 4]
  if tonumber(reserved_s) > 0 and redis.call('ZREM', log, ticket .. '|' .. reserved_s) == 1 then
    adjust(log, sum, -tonumber(reserved_s))
  end
  if tonumber(actual_s) > 0 then
    if settled_ms ~= '0' then
      redis.call('INCRBYFLOAT', settled, actual_s)
      redis.call('PEXPIRE', settled, settled_ms)
    else
      add(log, sum, ticket .. '+|' .. actual_s, actual_s, ttl)
    end
  end
end
return n
"""
)

SHA = {script: hashlib.sha1(script.encode()).hexdigest() for script in (RESERVE, SETTLE)}
"""What ``EVALSHA`` calls each script by."""
