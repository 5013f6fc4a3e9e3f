-- subscription_view: the subscription plus the plan quota of the current
-- period ("quota" is {} when the plan has no quota). ARGV: 1-5
-- apimon_mgmt_args.
return apimon_run(function()
apimon_schema_check()
local sk = KEYS[1]
local m = apimon_mgmt_args()
local now = m.now
local h = sub_load(sk, m.kind, m.owner, m.now)
local out = sub_public(h)
local n, unit = tonumber(h.quota_n) or 0, h.quota_unit or ''
if n > 0 and unit ~= '' then
  local s, e, stamp = period(unit, now)
  -- the period's count is in the hash while it is the latest one counted
  -- (check's state "<unit>:<stamp>:<start>:<end>:<count>"), else archived
  local u, st, c = (h['c:quota:plan'] or ''):match('^(%a+):(%d+):%d+:%d+:(%d+)$')
  local used
  if u == unit and st == stamp then
    used = tonumber(c)
  else
    used = tonumber(redis.call('GET', sk .. ':quota:plan:' .. stamp) or '0')
  end
  out.quota = { limit = fmt(n), used = fmt(used), remaining = fmt(math.max(n - used, 0)),
                periodStart = fmt(s), periodEnd = fmt(e), remainingMs = fmt(e - now) }
else
  out.quota = {}
end
return cjson.encode(out)
end)
