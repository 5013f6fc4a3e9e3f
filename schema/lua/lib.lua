-- apimon lib.lua: prepended to every script (see schema/README.md).
-- Lua 5.1 numbers are doubles: every time is an integer number of ms (< 2^53)
-- and is printed with fmt(), never tostring() (which switches to 1e+15).

local APIMON_SCHEMA = '1'
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

-- Provisioning scripts stamp the layout version and refuse another one.
local function apimon_schema_check()
  local v = redis.call('GET', 'apimon:schema')
  if not v then
    redis.call('SET', 'apimon:schema', APIMON_SCHEMA)
  elseif v ~= APIMON_SCHEMA then
    apimon_err('schema', 'layout version is ' .. v .. ', scripts expect ' .. APIMON_SCHEMA)
  end
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

-- GCRA with burst = n: at most n calls in any w seconds. The emission
-- interval is rounded up to whole ms so the guarantee holds exactly.
-- tat: stored theoretical arrival time (ms) or nil. Returns
-- allowed, new tat (if allowed), remaining after the call, reset s, retry s.
local function gcra(tat, n, w, now)
  local t = idiv(w * 1000 + n - 1, n)
  local cap = n * t
  tat = tonumber(tat) or now
  if tat < now then tat = now end
  local new = tat + t
  if new - now <= cap then
    return true, new, idiv(cap - (new - now), t), ceil_s(new - now), 0
  end
  local retry = ceil_s(new - now - cap)
  if retry < 1 then retry = 1 end
  return false, tat, idiv(cap - (tat - now), t), ceil_s(tat - now), retry
end

local NAME_RE = '^[A-Za-z0-9._-]+$'
local function valid_name(s)
  return type(s) == 'string' and #s >= 1 and #s <= 64 and s:match(NAME_RE) ~= nil
end

-- Owner ids end up inside key names: no ':' (the ':subs' suffix), braces
-- (hash tags), '|' or blanks.
local function valid_owner(kind, id)
  if type(id) ~= 'string' then return false end
  if kind == 'developer' then
    return #id <= 254 and id:match('^[^@%s%c:{}|]+@[^@%s%c:{}|]+$') ~= nil
  end
  return kind == 'appgroup' and valid_name(id)
end

local function valid_uuid(s)
  return type(s) == 'string' and #s == 36 and
    s:match('^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$') ~= nil and
    s:lower() == s
end

local function valid_digest(s)
  return type(s) == 'string' and #s == 64 and s:match('^[0-9a-f]+$') ~= nil
end

-- HGETALL reply -> table
local function hash_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Subscription hash -> public JSON (no key digests).
local function sub_public(h)
  local t = {}
  for k, v in pairs(h) do
    if k ~= 'kp' and k ~= 'ks' then t[k] = v end
  end
  return t
end

-- Audit trail of the management API: when a provisioning script is given
-- the optional "who" (token name) and "addr" (client address) arguments,
-- the change is appended to apimon:audit in the same atomic call. before
-- and after are tables (nil: none), never holding key digests.
local function apimon_audit(who, addr, now, action, target, before, after)
  if who == nil or who == '' then return end
  redis.call('XADD', 'apimon:audit', '*', 'ts', fmt(now), 'who', who, 'addr', addr or '',
    'action', action, 'target', target,
    'before', before and cjson.encode(before) or 'null',
    'after', after and cjson.encode(after) or 'null')
end

-- Owner kind and page size of the management API's list scripts.
local function apimon_page_args(kind, count)
  if kind ~= 'developer' and kind ~= 'appgroup' then
    apimon_err('bad_request', 'kind must be developer or appgroup')
  end
  local n = tonumber(count)
  if not n or n < 1 or n > 1000 or n ~= math.floor(n) then
    apimon_err('bad_request', 'count: must be an integer from 1 to 1000')
  end
  return n
end

local function sub_id_of(key)
  return key:match('^apimon:sub:{(.*)}$')
end

-- Load a subscription for management calls; an empty owner kind skips the
-- owner check (operator calls), a wrong owner looks like a missing one.
local function sub_load(key, kind, owner)
  local h = hash_table(redis.call('HGETALL', key))
  if not h.id then apimon_err('not_found', 'no such subscription') end
  if kind and kind ~= '' and (h.owner_kind ~= kind or h.owner ~= owner) then
    apimon_err('not_found', 'no such subscription')
  end
  return h
end
