-- subscription_plan: change an active subscription's plan (Apigee-style
-- "POST .../subscriptions/{name}:changePlan"), keeping its keys, state,
-- attributes and counters (schema/README.md, "Plan changes"). ARGV: 1-5
-- apimon_mgmt_args, 6 plan, 7 effective (now, the default, or periodEnd:
-- the start of the next UTC month, the billing period's end), 8 If-Match,
-- 9-11 the Idempotency-Key's digest, the request's fingerprint and the
-- sealed keys (none here: lib.lua idem_replay; all optional).
-- The plan it is on while a change is pending withdraws that change.
-- Refused (409): not active, the same plan with nothing pending, the change
-- already pending, a retired plan, an inactive product, a plan of another
-- product that the subscription's product does not list in changeTo.
return apimon_run(function()
apimon_schema_check()
local sk = KEYS[1]
local m, plan, eff, cond, idem, fp, sealed = apimon_mgmt_args()
local replay = idem_replay(idem, fp)
if replay then return replay end
local now = m.now
local h = sub_load(sk, m.kind, m.owner, now)
if eff == nil or eff == '' then eff = 'now' end
if eff ~= 'now' and eff ~= 'periodEnd' then apimon_err('bad_request', 'effective: must be now or periodEnd') end
if not valid_name(plan) then apimon_err('bad_request', 'plan: must match ^[A-Za-z0-9._-]{1,64}$') end
apimon_if_match(h, cond, 'subscription')

local at = now
if eff == 'periodEnd' then at = select(2, period('month', now)) end
local et = tonumber(h.endTime) or 0
if h.state ~= 'active' then
  apimon_err('conflict', 'cannot change the plan of a subscription that is ' .. tostring(h.state) ..
    ' (only an active one)')
end
if et ~= 0 and et <= at then
  apimon_err('conflict', 'the subscription ends at ' .. fmt(et) .. ', not after the change at ' .. fmt(at))
end
-- back to the plan it is on: withdraws a pending change, if there is one
local cancel = plan == h.plan and h.nextPlan ~= nil
if plan == h.plan and not cancel then
  apimon_err('conflict', 'plan: the subscription is on plan ' .. plan .. ' already')
end
if plan == h.nextPlan and eff == 'periodEnd' then
  apimon_err('conflict', 'plan: a change to ' .. plan .. ' at ' .. h.nextAt .. ' is pending already')
end
-- what it may change to (a withdrawal buys nothing: no check)
local product = h.product
if not cancel then
  local p = redis.call('HMGET', 'apimon:plan:' .. plan, 'product', 'retired')
  if not p[1] then apimon_err('not_found', 'plan: no such plan ' .. plan) end
  if p[2] == '1' then apimon_err('conflict', 'plan ' .. plan .. ' is retired: not for sale') end
  product = p[1]
  local st = redis.call('HGET', 'apimon:product:' .. product, 'state')
  if st == 'inactive' then apimon_err('conflict', 'product ' .. product .. ' is inactive: not for sale') end
end
if product ~= h.product then
  local to = redis.call('HGET', 'apimon:product:' .. (h.product or ''), 'changeTo') or ''
  if not to:find(',' .. product .. ',', 1, true) then
    apimon_err('conflict', 'plan ' .. plan .. ' is a plan of product ' .. product .. ', and product ' ..
      tostring(h.product) .. ' does not list it in changeTo')
  end
end

local before = sub_public(h)
if cancel then
  redis.call('HDEL', sk, 'nextPlan', 'nextProduct', 'nextAt')
  redis.call('HSET', sk, 'lastModifiedAt', fmt(now))
  redis.call('HINCRBY', sk, 'ver', 1)
elseif eff == 'now' then
  sub_plan_switch(sk, h, product, plan, now, now)
else
  redis.call('HSET', sk, 'nextPlan', plan, 'nextProduct', product, 'nextAt', fmt(at), 'lastModifiedAt', fmt(now))
  redis.call('HINCRBY', sk, 'ver', 1)
end
local after = sub_public(hash_table(redis.call('HGETALL', sk)))
apimon_audit(m.who, m.addr, now, 'subscription.changePlan', h.id, before, after)
idem_store(idem, fp, after, sealed)
return cjson.encode(after)
end)
