-- subscription_create: buy a plan for an owner (an empty plan: the
-- product's default plan); mirrors the plan limits and the product's APIs
-- into the subscription hash and indexes it. ARGV: 1-5 apimon_mgmt_args
-- (the owner buys), 6 id, 7 product, 8 plan, 9 primary digest, 10 secondary
-- digest, 11 startTime (0 = now), 12 endTime (0 = open-ended), 13-15 the
-- Idempotency-Key's digest, the request's fingerprint and the sealed keys
-- (lib.lua idem_replay; all optional), 16 attributes (JSON; optional).
-- Refused (409): an inactive owner, an inactive product, a retired plan.
return apimon_run(function()
apimon_schema_check()
local sk = KEYS[1]
local m, id, product, plan, kp, ks, st, et, idem, fp, sealed, attrs = apimon_mgmt_args()
local replay = idem_replay(idem, fp)
if replay then return replay end
local kind, owner, now = m.kind, m.owner, m.now
plan, kp, ks, st, et = plan or '', kp or '', ks or '', st or '0', et or '0'
local start, stop = now, 0
if st ~= '0' then start = apimon_time_arg(st, 'startTime') end
if et ~= '0' then
  stop = apimon_time_arg(et, 'endTime')
  if stop <= start then apimon_err('bad_request', 'endTime: must be after startTime (' .. fmt(start) .. ')') end
end

if not valid_uuid(id) then apimon_err('bad_request', 'id: not a lowercase UUID') end
if sub_id_of(sk) ~= id then apimon_err('bad_request', 'key does not match id') end
if kind ~= 'developer' and kind ~= 'appgroup' then apimon_err('bad_request', 'owner kind must be developer or appgroup') end
if not valid_digest(kp) then apimon_err('bad_request', 'primary key digest: not 64 hex digits') end
if ks ~= '' and not valid_digest(ks) then apimon_err('bad_request', 'secondary key digest: not 64 hex digits') end
if redis.call('EXISTS', sk) == 1 then apimon_err('conflict', 'subscription ' .. id .. ' already exists') end
local ok, av = pcall(cjson.decode, (attrs and attrs ~= '') and attrs or '[]')
if not ok then apimon_err('bad_request', 'attributes: not JSON') end
attrs = apimon_attributes(av, 'attributes')
local ostatus = valid_owner(kind, owner) and redis.call('HMGET', 'apimon:' .. kind .. ':' .. owner,
  kind == 'developer' and 'email' or 'name', 'status')
if not ostatus or not ostatus[1] then
  apimon_err('not_found', 'no such ' .. kind .. ' ' .. owner)
end
if ostatus[2] == 'inactive' then apimon_err('conflict', kind .. ' ' .. owner .. ' is inactive: it cannot purchase') end
local prod = redis.call('HMGET', 'apimon:product:' .. product, 'apis', 'defaultPlan', 'nplans', 'state')
local apis = prod[1]
if not apis then apimon_err('not_found', 'no such product ' .. product) end
if prod[4] == 'inactive' then apimon_err('conflict', 'product ' .. product .. ' is inactive: not for sale') end
if plan == '' then
  plan = prod[2] or ''
  local nplans = prod[3]
  if not nplans then
    -- a catalog applied before defaultPlan existed: the only plan, if any
    local mine = {}
    for _, name in ipairs(redis.call('SMEMBERS', 'apimon:plans')) do
      if redis.call('HGET', 'apimon:plan:' .. name, 'product') == product then mine[#mine + 1] = name end
    end
    nplans = fmt(#mine)
    if #mine == 1 then plan = mine[1] end
  end
  if plan == '' then
    apimon_err('bad_request', 'plan: is required: product ' .. product .. ' has ' .. nplans ..
      ' plans and no defaultPlan')
  end
end
local p = redis.call('HMGET', 'apimon:plan:' .. plan, 'product', 'approval', 'rate_n', 'rate_w', 'quota_n', 'quota_unit',
                    'retired')
if not p[1] then apimon_err('not_found', 'no such plan ' .. plan) end
if p[1] ~= product then apimon_err('bad_request', 'plan ' .. plan .. ' is not a plan of product ' .. product) end
if p[7] == '1' then apimon_err('conflict', 'plan ' .. plan .. ' is retired: not for sale') end

local state = p[2] == 'manual' and 'submitted' or 'active'
redis.call('HSET', sk, 'id', id, 'owner_kind', kind, 'owner', owner, 'product', product, 'plan', plan,
  'state', state, 'ver', '1', 'startTime', fmt(start), 'endTime', fmt(stop), 'createdAt', fmt(now), 'lastModifiedAt', fmt(now),
  'kp', kp, 'ks', ks, 'apis', apis, 'rate_n', p[3], 'rate_w', p[4], 'quota_n', p[5], 'quota_unit', p[6],
  'attributes', attrs)
sub_policy_sync(sk)
redis.call('SADD', 'apimon:subs', id)
redis.call('SADD', 'apimon:plan:' .. plan .. ':subs', id)
redis.call('ZADD', 'apimon:' .. kind .. ':' .. owner .. ':subs', now, id)
local after = sub_public(hash_table(redis.call('HGETALL', sk)))
apimon_audit(m.who, m.addr, now, 'subscription.create', id, nil, after)
idem_store(idem, fp, after, sealed)
return cjson.encode(after)
end)
