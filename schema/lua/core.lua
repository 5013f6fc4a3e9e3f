-- apimon core.lua: prepended to every script, first (see schema/README.md);
-- the check script (hot path) gets only this part, the others lib.lua too.
-- Keep it small: every script call re-creates these closures.
-- Lua 5.1 numbers are doubles: every time is an integer number of ms (< 2^53)
-- and is printed with fmt(), never tostring() (which switches to 1e+15).

local DAY_MS = 86400000
local floor, sfmt = math.floor, string.format   -- locals: cheaper than global lookups

local function fmt(n) return sfmt('%d', n) end

-- Errors travel as a tagged table so apimon_run() can turn them into a clean
-- error reply (error() itself would append the script's SHA and line).
local function apimon_err(code, msg)
  error({ apimon = 'ERR apimon ' .. code .. ': ' .. msg }, 0)
end

local function apimon_run(fn)
  local ok, res = pcall(fn)
  if ok then return res end
  if type(res) == 'table' and res.apimon then return redis.error_reply(res.apimon) end
  error(res, 0)
end

-- ARGV time in ms; "0" (or empty) means the server clock.
local function apimon_now(arg)
  local n = tonumber(arg or '0')
  if n == nil or n < 0 or n ~= floor(n) then apimon_err('bad_request', 'bad now: ' .. tostring(arg)) end
  if n == 0 then
    local t = redis.call('TIME')
    n = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
  end
  return n
end

-- Gregorian calendar on day numbers (days since 1970-01-01), integers only.
local function idiv(a, b) return floor(a / b) end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = idiv(y, 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = idiv(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + idiv(yoe, 4) - idiv(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

local cz, cy, cm, cd   -- one-entry cache: check asks for the same day 2-3 times
local function civil_from_days(z)
  if z == cz then return cy, cm, cd end
  cz = z
  z = z + 719468
  local era = idiv(z, 146097)
  local doe = z - era * 146097
  local yoe = idiv(doe - idiv(doe, 1460) + idiv(doe, 36524) - idiv(doe, 146096), 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + idiv(yoe, 4) - idiv(yoe, 100))
  local mp = idiv(5 * doy + 2, 153)
  local d = doy - idiv(153 * mp + 2, 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  cy, cm, cd = y, m, d
  return y, m, d
end

-- "YYYYMMDD" of the UTC day containing ms.
local function ymd(ms)
  local y, m, d = civil_from_days(idiv(ms, DAY_MS))
  return sfmt('%04d%02d%02d', y, m, d)
end

local PERIOD_UNITS = { minute = 60000, hour = 3600000, day = DAY_MS }

-- Calendar period containing ms: start ms, end ms (exclusive), key stamp.
local function period(unit, ms)
  local fixed = PERIOD_UNITS[unit]
  if fixed then
    local s = ms - ms % fixed
    local y, m, d = civil_from_days(idiv(s, DAY_MS))
    local rest = s % DAY_MS
    local stamp = sfmt('%04d%02d%02d', y, m, d)
    if unit == 'hour' then
      stamp = stamp .. sfmt('%02d', idiv(rest, 3600000))
    elseif unit == 'minute' then
      stamp = stamp .. sfmt('%02d%02d', idiv(rest, 3600000), idiv(rest % 3600000, 60000))
    end
    return s, s + fixed, stamp
  end
  local days = idiv(ms, DAY_MS)
  if unit == 'week' then
    -- day 0 was a Thursday: (days + 3) % 7 counts days since Monday
    local monday = days - (days + 3) % 7
    return monday * DAY_MS, (monday + 7) * DAY_MS, ymd(monday * DAY_MS)
  elseif unit == 'month' then
    local y, m = civil_from_days(days)
    local ny, nm = y, m + 1
    if nm == 13 then ny, nm = y + 1, 1 end
    return days_from_civil(y, m, 1) * DAY_MS, days_from_civil(ny, nm, 1) * DAY_MS,
           sfmt('%04d%02d', y, m)
  end
  apimon_err('bad_request', 'bad period unit: ' .. tostring(unit))
end

local function ceil_s(ms) -- ms -> whole seconds, rounded up
  return idiv(ms + 999, 1000)
end

-- GCRA with burst = n: at most n calls in any w seconds. Its state is in
-- microseconds, so rates above 1000/s keep their exact interval; the
-- emission interval t is rounded up to whole us so the guarantee holds
-- exactly; cap = n * t. A call at now with stored theoretical arrival time
-- tat (none or past: now) passes when max(tat, now) + t - now <= cap, and
-- then stores that sum as the new tat (check.lua).
local function gcra_params(n, w)
  local t = idiv(w * 1000000 + n - 1, n)
  return t, n * t
end

local function ceil_us(us) -- us -> whole seconds, rounded up
  return idiv(us + 999999, 1000000)
end

-- The subscription fields the request check needs, mirrored into one field
-- "pol" (state|startTime|endTime|plan|product|rate_n|rate_w|quota_n|
-- quota_unit|apis) so that the hot path reads few fields. Every script that
-- writes one of them calls this afterwards; check rebuilds a missing "pol".
local function sub_policy_sync(sk)
  local f = redis.call('HMGET', sk, 'state', 'startTime', 'endTime', 'plan', 'product',
    'rate_n', 'rate_w', 'quota_n', 'quota_unit', 'apis')
  local pol = (f[1] or '') .. '|' .. (f[2] or '0') .. '|' .. (f[3] or '0') .. '|' .. (f[4] or '') .. '|' ..
    (f[5] or '') .. '|' .. (f[6] or '0') .. '|' .. (f[7] or '0') .. '|' .. (f[8] or '0') .. '|' ..
    (f[9] or '') .. '|' .. (f[10] or '')
  redis.call('HSET', sk, 'pol', pol)
  return pol
end

-- The check's layout (schema/README.md, "The check's layout"): the ARGV of
-- check and the lines of its batch record, which check_refund reads; nginx
-- sends the same counts (ngx_http_apimon_batch.h).
local CHECK_HEAD_ARGS = 2   -- ARGV first: now, the number of locations L
local CHECK_LOC_ARGS = 6    -- per location: api, rate n, rate w, quota n, quota unit, scope
local CHECK_REQ_ARGS = 2    -- per request: key digest, location number (then the batch id)
local RECORD_HEAD = 3       -- record lines first: the batch id, now, L (then the locations, the keys)
local RECORD_REQ = 2        -- record lines per request after the keys: what was counted, location
