-- subscription_usage: accepted and refused calls per API per UTC day
-- (management API reads), from the monthly usage hashes.
-- KEYS[1] = apimon:sub:{<id>}
-- ARGV: 1-5 apimon_mgmt_args (the owner must match, else not_found), 6 first
-- day YYYYMMDD, 7 last day YYYYMMDD (inclusive, at most 400 days later).
-- Reply: flat array of field, count pairs, fields `<YYYYMMDD>|<api>|<ok or
-- reason>` as in the usage hash, sorted.
return apimon_run(function()
local sk = KEYS[1]
local m, from, to = apimon_mgmt_args()
sub_load(sk, m.kind, m.owner)
from, to = from or '', to or ''
if not from:match('^%d%d%d%d%d%d%d%d$') then apimon_err('bad_request', 'from: must be YYYYMMDD') end
if not to:match('^%d%d%d%d%d%d%d%d$') then apimon_err('bad_request', 'to: must be YYYYMMDD') end
if to < from then apimon_err('bad_request', 'to: before from') end
local y, m = tonumber(from:sub(1, 4)), tonumber(from:sub(5, 6))
local ty, tm = tonumber(to:sub(1, 4)), tonumber(to:sub(5, 6))
if (ty - y) * 12 + tm - m > 14 then apimon_err('bad_request', 'to: more than 400 days after from') end
local fields = {}
local counts = {}
while y < ty or (y == ty and m <= tm) do
  local flat = redis.call('HGETALL', sk .. ':usage:' .. string.format('%04d%02d', y, m))
  for i = 1, #flat, 2 do
    local day = flat[i]:sub(1, 8)
    if day >= from and day <= to then
      fields[#fields + 1] = flat[i]
      counts[flat[i]] = flat[i + 1]
    end
  end
  m = m + 1
  if m == 13 then y, m = y + 1, 1 end
end
table.sort(fields)
local out = {}
for _, f in ipairs(fields) do
  out[#out + 1] = f
  out[#out + 1] = counts[f]
end
return out
end)
