-- subscription_state: lifecycle transitions (table in schema/README.md).
-- ARGV: 1-5 apimon_mgmt_args, 6 action, 7 If-Match (optional).
return apimon_run(function()
apimon_schema_check()
local sk = KEYS[1]
local m, action, cond = apimon_mgmt_args()
local now = m.now
local h = sub_load(sk, m.kind, m.owner, m.now)

local T = {
  activate = { from = { submitted = true }, to = 'active' },
  suspend = { from = { active = true }, to = 'suspended' },
  resume = { from = { suspended = true }, to = 'active' },
  cancel = { from = { submitted = true, active = true, suspended = true }, to = 'cancelled' },
  expire = { from = { submitted = true, active = true, suspended = true }, to = 'expired' },
}
local t = T[action]
if not t then apimon_err('bad_request', 'unknown action ' .. tostring(action)) end
apimon_if_match(h, cond, 'subscription')
if not t.from[h.state] then
  apimon_err('conflict', 'cannot ' .. action .. ' a subscription that is ' .. tostring(h.state))
end
redis.call('HSET', sk, 'state', t.to, 'lastModifiedAt', fmt(now))
-- a plan change waiting for the period's end dies with the subscription
if t.to == 'cancelled' or t.to == 'expired' then redis.call('HDEL', sk, 'nextPlan', 'nextProduct', 'nextAt') end
-- The agent needs the suspended intervals (plans with suspension pause):
-- suspendedAt while suspended, then "<from>-<to>" appended to suspensions.
if t.to == 'suspended' then
  redis.call('HSET', sk, 'suspendedAt', fmt(now))
elseif h.state == 'suspended' then
  local from = tonumber(h.suspendedAt)
  if from and from < now then
    local list = h.suspensions or ''
    redis.call('HSET', sk, 'suspensions', list .. (list ~= '' and ',' or '') .. fmt(from) .. '-' .. fmt(now))
  end
  redis.call('HDEL', sk, 'suspendedAt')
end
redis.call('HINCRBY', sk, 'ver', 1)
local et = tonumber(h.endTime) or 0
if action == 'expire' or (action == 'cancel' and (et == 0 or et > now)) then
  redis.call('HSET', sk, 'endTime', fmt(now))
end
sub_policy_sync(sk)
local after = sub_public(hash_table(redis.call('HGETALL', sk)))
apimon_audit(m.who, m.addr, now, 'subscription.' .. action, h.id, sub_public(h), after)
return cjson.encode(after)
end)
