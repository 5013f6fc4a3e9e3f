-- apimon calendar.lua: the periods of a rule of N units, prepended to the
-- check script after core.lua (schema/embed.sh). Pure functions of their
-- arguments: no Redis call. The anchor rule is in schema/README.md, "Rule
-- periods": the first period runs from the subscription's start to the end
-- of the N-th unit counted from the one holding the start, then every N
-- units. Units are UTC: second, minute, hour, day, week (from week_start),
-- month (calendar).

local UNIT_MS = { second = 1000, minute = 60000, hour = 3600000, day = DAY_MS, week = 7 * DAY_MS }
-- weekStart of the catalog -> days after Monday
local WEEK_START = { monday = 0, tuesday = 1, wednesday = 2, thursday = 3, friday = 4, saturday = 5, sunday = 6 }

-- The key stamp of the unit that starts at ms: YYYYMM (month), YYYYMMDD
-- (day, week: its first day), then HH, MM, SS for hour, minute, second.
local function unit_stamp(unit, ms)
  local y, m, d = civil_from_days(idiv(ms, DAY_MS))
  if unit == 'month' then return sfmt('%04d%02d', y, m) end
  local st = sfmt('%04d%02d%02d', y, m, d)
  if unit == 'day' or unit == 'week' then return st end
  local rest = ms % DAY_MS
  st = st .. sfmt('%02d', idiv(rest, 3600000))
  if unit == 'hour' then return st end
  st = st .. sfmt('%02d', idiv(rest % 3600000, 60000))
  if unit == 'minute' then return st end
  return st .. sfmt('%02d', idiv(rest % 60000, 1000))
end

-- The period of a rule of n units holding now, for a subscription that
-- started at anchor (ms; 0 for none); week_start 0 (Monday) ... 6 (Sunday).
-- Returns start ms (the anchor for the first period), end ms (exclusive),
-- and the stamp of the period's first unit. Before the anchor: the first
-- period.
local function rule_period(unit, n, anchor, now, week_start)
  if unit == 'month' then
    local y, m = civil_from_days(idiv(anchor, DAY_MS))
    local a = y * 12 + m - 1
    y, m = civil_from_days(idiv(now, DAY_MS))
    local k = idiv(y * 12 + m - 1 - a, n)
    if k < 0 then k = 0 end
    local m0 = a + k * n
    local m1 = m0 + n
    local s = days_from_civil(idiv(m0, 12), m0 % 12 + 1, 1) * DAY_MS
    local e = days_from_civil(idiv(m1, 12), m1 % 12 + 1, 1) * DAY_MS
    return (k == 0 and anchor or s), e, unit_stamp('month', s)
  end
  local len = UNIT_MS[unit]
  if len == nil then apimon_err('bad_request', 'bad period unit: ' .. tostring(unit)) end
  -- day 0 was a Thursday: weeks start on the days d with (d + 3 - ws) % 7 == 0
  local origin = unit == 'week' and ((week_start or 0) - 3) % 7 * DAY_MS or 0
  local g0 = anchor - (anchor - origin) % len
  local k = idiv(idiv(now - g0, len), n)
  if k < 0 then k = 0 end
  local s = g0 + k * n * len
  return (k == 0 and anchor or s), s + n * len, unit_stamp(unit, s)
end
