-- check: the per-request decision (hot path). One HMGET, then only the
-- counters of configured windows; writes happen only when every window passes.
return apimon_run(function()
local sk = KEYS[1]
local digest, api = ARGV[1], ARGV[2]
local now = apimon_now(ARGV[3])
local lrn, lrw = tonumber(ARGV[4]) or 0, tonumber(ARGV[5]) or 0
local lqn, lqu = tonumber(ARGV[6]) or 0, ARGV[7] or ''
local lscope = ARGV[8] or ''

local f = redis.call('HMGET', sk, 'id', 'kp', 'ks', 'state', 'startTime', 'endTime',
  'apis', 'plan', 'product', 'rate_n', 'rate_w', 'quota_n', 'quota_unit')
local id, plan, product = f[1], f[8], f[9]

if not id or digest == nil or digest == '' or (digest ~= f[2] and digest ~= f[3]) then
  return { 'invalid_key', '', '', '', 0, 0 }
end

local function count(reason)
  local day = ymd(now)
  local uk = sk .. ':usage:' .. day:sub(1, 6)
  if redis.call('HINCRBY', uk, day .. '|' .. api .. '|' .. reason, 1) == 1 then
    -- a new field may mean a new hash: (re)arm its expiry, 400 days after the month
    local _, mend = period('month', now)
    redis.call('PEXPIREAT', uk, mend + 400 * DAY_MS)
  end
end

local st, et = tonumber(f[5]) or 0, tonumber(f[6]) or 0
if f[4] ~= 'active' or now < st or (et ~= 0 and now >= et) then
  count('inactive')
  return { 'inactive', id, plan, product, 0, 0 }
end
if not (f[7] or ''):find(',' .. api .. ',', 1, true) then
  count('not_entitled')
  return { 'not_entitled', id, plan, product, 0, 0 }
end

-- Windows: {name, kind, limit, window s or unit, counter key}
local wins = {}
local prn, prw = tonumber(f[10]) or 0, tonumber(f[11]) or 0
local pqn, pqu = tonumber(f[12]) or 0, f[13] or ''
if prn > 0 and prw > 0 then wins[#wins + 1] = { 'plan-rate', 'r', prn, prw, sk .. ':rate:plan' } end
if pqn > 0 and pqu ~= '' then wins[#wins + 1] = { 'plan-quota', 'q', pqn, pqu, sk .. ':quota:plan' } end
if lrn > 0 and lrw > 0 then wins[#wins + 1] = { 'loc-rate', 'r', lrn, lrw, sk .. ':rate:loc.' .. lscope } end
if lqn > 0 and lqu ~= '' then wins[#wins + 1] = { 'loc-quota', 'q', lqn, lqu, sk .. ':quota:loc.' .. lscope } end

local out = {}
local rate_refused, quota_refused, retry = false, false, 0
for i, w in ipairs(wins) do
  local ok, rem, reset, wait, secs
  if w[2] == 'r' then
    ok, w[6], rem, reset, wait = gcra(redis.call('GET', w[5]), w[3], w[4], now)
    secs = w[4]
    if not ok then rate_refused = true end
  else
    local s, e, stamp = period(w[4], now)
    w[5] = w[5] .. ':' .. stamp
    w[6] = e
    local used = tonumber(redis.call('GET', w[5]) or '0')
    ok = used < w[3]
    rem = ok and w[3] - used - 1 or math.max(w[3] - used, 0)
    reset = ceil_s(e - now)
    wait = ok and 0 or math.max(reset, 1)
    secs = idiv(e - s, 1000)
    if not ok then quota_refused = true end
  end
  if wait > retry then retry = wait end
  out[#out + 1] = w[1]
  out[#out + 1] = w[3]
  out[#out + 1] = secs
  out[#out + 1] = rem
  out[#out + 1] = reset
end

local result = 'allowed'
if quota_refused then result = 'quota_exceeded' elseif rate_refused then result = 'rate_limited' end

if result == 'allowed' then
  retry = 0
  for _, w in ipairs(wins) do
    if w[2] == 'r' then
      -- absolute expiry: idle keys vanish once the TAT is past (same clock as now)
      redis.call('SET', w[5], fmt(w[6]), 'PXAT', w[6])
    elseif redis.call('INCR', w[5]) == 1 then
      redis.call('PEXPIREAT', w[5], w[6] + 62 * DAY_MS)
    end
  end
  count('ok')
else
  count(result)
end

local reply = { result, id, plan, product, retry, #wins }
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
end)
