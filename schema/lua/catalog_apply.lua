-- catalog_apply: replace the whole catalog atomically. Everything is
-- validated (and conflicts checked) before the first write. ARGV: 1 the
-- document, 2 now, 3 who (optional: the audit entries of the lifecycle
-- transitions name it; default "catalog"), 4 effective (ms the prices take
-- effect; empty or 0: now).
-- Lifecycle (schema/README.md): a product's state is active or inactive
-- (inactive: not for sale), a plan may be retired (not for sale; final);
-- a plan (or product) leaves the catalog only when no subscription that can
-- still be used or billed refers to it.
return apimon_run(function()
apimon_schema_check()
local text = ARGV[1]
local now = apimon_now(ARGV[2])
local who = (ARGV[3] and ARGV[3] ~= '') and ARGV[3] or 'catalog'
-- ARGV[4]: when this catalog's prices take effect (ms; empty or 0: now)
local eff = now
if ARGV[4] and ARGV[4] ~= '' and ARGV[4] ~= '0' then eff = apimon_time_arg(ARGV[4], 'effective') end

local ok, doc = pcall(cjson.decode, text or '')
if not ok or type(doc) ~= 'table' then apimon_err('bad_request', 'catalog: not a JSON object') end

local function bad(path, msg) apimon_err('bad_request', path .. ': ' .. msg) end
local function is_int(v, min)
  return type(v) == 'number' and v == math.floor(v) and v >= min and v < 2 ^ 53
end
local function opt_string(v, path)
  if v ~= nil and v ~= cjson.null and type(v) ~= 'string' then bad(path, 'must be a string') end
  if v == cjson.null then return '' end
  return v or ''
end
local function list(v, path)
  if type(v) ~= 'table' then bad(path, 'must be an array') end
  for k in pairs(v) do
    if type(k) ~= 'number' then bad(path, 'must be an array') end
  end
  return v
end

local RATE_PER = { second = 1, minute = 60, hour = 3600 }
local QUOTA_PERIOD = { minute = true, hour = true, day = true, week = true, month = true }
local MODELS = { free = true, flat = true, metered = true, flat_with_overage = true,
                 graduated = true, volume = true, package = true }
local MONEY = { 'amount', 'unitAmount', 'unitSize', 'includedUnits', 'packageSize' }

local products, plans = {}, {}
for i, p in ipairs(list(doc.products, 'products')) do
  local path = 'products[' .. (i - 1) .. ']'
  if type(p) ~= 'table' then bad(path, 'must be an object') end
  if not valid_name(p.name) then bad(path .. '.name', 'must match ^[A-Za-z0-9._-]{1,64}$') end
  if products[p.name] then bad(path .. '.name', 'duplicate product ' .. p.name) end
  local seen = {}
  for j, a in ipairs(list(p.apis, path .. '.apis')) do
    if not valid_name(a) then bad(path .. '.apis[' .. (j - 1) .. ']', 'must match ^[A-Za-z0-9._-]{1,64}$') end
    if seen[a] then bad(path .. '.apis[' .. (j - 1) .. ']', 'duplicate api ' .. a) end
    seen[a] = true
  end
  local dp = opt_string(p.defaultPlan, path .. '.defaultPlan')
  if dp ~= '' and not valid_name(dp) then bad(path .. '.defaultPlan', 'must match ^[A-Za-z0-9._-]{1,64}$') end
  local state = p.state
  if state == nil or state == cjson.null then state = 'active' end
  if state ~= 'active' and state ~= 'inactive' then bad(path .. '.state', 'must be active or inactive') end
  if p.attributes ~= nil then apimon_attributes(p.attributes, path .. '.attributes') end
  -- changeTo: the other products whose plans its subscriptions may change to
  local to = {}
  if p.changeTo ~= nil and p.changeTo ~= cjson.null then
    for j, o in ipairs(list(p.changeTo, path .. '.changeTo')) do
      if not valid_name(o) then bad(path .. '.changeTo[' .. (j - 1) .. ']', 'must match ^[A-Za-z0-9._-]{1,64}$') end
      if o == p.name then bad(path .. '.changeTo[' .. (j - 1) .. ']', 'names the product itself') end
      to[#to + 1] = o
    end
  end
  products[p.name] = {
    name = p.name, path = path, state = state,
    displayName = opt_string(p.displayName, path .. '.displayName'),
    description = opt_string(p.description, path .. '.description'),
    apis = ',' .. table.concat(p.apis, ',') .. (#p.apis > 0 and ',' or ''),
    defaultPlan = dp, nplans = 0, changeTo = #to > 0 and (',' .. table.concat(to, ',') .. ',') or '',
  }
end

for i, p in ipairs(list(doc.plans, 'plans')) do
  local path = 'plans[' .. (i - 1) .. ']'
  if type(p) ~= 'table' then bad(path, 'must be an object') end
  if not valid_name(p.name) then bad(path .. '.name', 'must match ^[A-Za-z0-9._-]{1,64}$') end
  if plans[p.name] then bad(path .. '.name', 'duplicate plan ' .. p.name) end
  if type(p.product) ~= 'string' or not products[p.product] then
    bad(path .. '.product', 'no such product in this catalog: ' .. tostring(p.product))
  end
  local approval = p.approval
  if approval == nil or approval == cjson.null then approval = 'auto' end
  if approval ~= 'auto' and approval ~= 'manual' then bad(path .. '.approval', 'must be auto or manual') end
  local rn, rw, qn, qu = 0, 0, 0, ''
  if p.rateLimit ~= nil and p.rateLimit ~= cjson.null then
    if type(p.rateLimit) ~= 'table' then bad(path .. '.rateLimit', 'must be an object') end
    if not is_int(p.rateLimit.limit, 1) then bad(path .. '.rateLimit.limit', 'must be an integer >= 1') end
    rw = RATE_PER[p.rateLimit.per]
    if not rw then bad(path .. '.rateLimit.per', 'must be second, minute or hour') end
    rn = p.rateLimit.limit
  end
  if p.quota ~= nil and p.quota ~= cjson.null then
    if type(p.quota) ~= 'table' then bad(path .. '.quota', 'must be an object') end
    if not is_int(p.quota.limit, 1) then bad(path .. '.quota.limit', 'must be an integer >= 1') end
    if not QUOTA_PERIOD[p.quota.period] then
      bad(path .. '.quota.period', 'must be minute, hour, day, week or month')
    end
    qn, qu = p.quota.limit, p.quota.period
  end
  local pr = p.pricing
  if type(pr) ~= 'table' then bad(path .. '.pricing', 'is required and must be an object') end
  if not MODELS[pr.model] then bad(path .. '.pricing.model', 'unknown pricing model ' .. tostring(pr.model)) end
  if pr.model ~= 'free' and (type(pr.currency) ~= 'string' or not pr.currency:match('^[a-z][a-z][a-z]$')) then
    bad(path .. '.pricing.currency', 'must be a lowercase ISO 4217 code')
  end
  for _, k in ipairs(MONEY) do
    if pr[k] ~= nil and not is_int(pr[k], 0) then bad(path .. '.pricing.' .. k, 'must be an integer >= 0') end
  end
  local susp = p.suspension
  if susp == nil or susp == cjson.null then susp = 'charge' end
  if susp ~= 'charge' and susp ~= 'pause' then bad(path .. '.suspension', 'must be charge or pause') end
  if pr.tiers ~= nil then
    for j, t in ipairs(list(pr.tiers, path .. '.pricing.tiers')) do
      if type(t) ~= 'table' then bad(path .. '.pricing.tiers[' .. (j - 1) .. ']', 'must be an object') end
    end
  end
  local retired = p.retired
  if retired == nil or retired == cjson.null then retired = false end
  if type(retired) ~= 'boolean' then bad(path .. '.retired', 'must be true or false') end
  if p.attributes ~= nil then apimon_attributes(p.attributes, path .. '.attributes') end
  plans[p.name] = {
    name = p.name, product = p.product, retired = retired and '1' or '0', path = path,
    displayName = opt_string(p.displayName, path .. '.displayName'),
    approval = approval, suspension = susp, rate_n = rn, rate_w = rw, quota_n = qn, quota_unit = qu,
    pricing = cjson.encode(pr), json = cjson.encode(p),
  }
end

-- The plan a purchase naming only the product gets: the declared
-- defaultPlan, one of the product's own, else the product's only plan.
for name, pr in pairs(products) do
  if pr.defaultPlan ~= '' then
    local d = plans[pr.defaultPlan]
    if not d then bad(pr.path .. '.defaultPlan', 'no such plan in this catalog: ' .. pr.defaultPlan) end
    if d.product ~= name then
      bad(pr.path .. '.defaultPlan', 'plan ' .. pr.defaultPlan .. ' is a plan of product ' .. d.product)
    end
  end
end
local only = {}
for name, p in pairs(plans) do
  local pr = products[p.product]
  pr.nplans = pr.nplans + 1
  only[p.product] = name
end
for name, pr in pairs(products) do
  if pr.defaultPlan == '' and pr.nplans == 1 then pr.defaultPlan = only[name] end
end
for _, pr in pairs(products) do
  for o in pr.changeTo:gmatch('[^,]+') do
    if not products[o] then bad(pr.path .. '.changeTo', 'no such product in this catalog: ' .. o) end
  end
end

-- Conflicts: plans in use must survive with the same product; products
-- follow from that (a used plan needs its product in the document). In use:
-- a subscription that can still be used (submitted, active, suspended) or
-- billed (it ended in this UTC month or the one before: the billing agent
-- bills a month once it is over).
local this_month = period('month', now)
local billed_before = period('month', this_month - 1)
local function live(id)
  local s = redis.call('HMGET', 'apimon:sub:{' .. id .. '}', 'state', 'endTime')
  if s[1] == false then return false end
  if s[1] == 'submitted' or s[1] == 'active' or s[1] == 'suspended' then return true end
  local e = tonumber(s[2]) or 0
  return e == 0 or e >= billed_before
end
local old_plans = redis.call('SMEMBERS', 'apimon:plans')
local old = {}
for _, name in ipairs(old_plans) do
  local h = redis.call('HMGET', 'apimon:plan:' .. name, 'product', 'rate_n', 'rate_w', 'quota_n', 'quota_unit',
                       'retired', 'pricing')
  local used = 0
  for _, id in ipairs(redis.call('SMEMBERS', 'apimon:plan:' .. name .. ':subs')) do
    if live(id) then used = used + 1 end
  end
  -- subscriptions that changed to another plan: their days on this one are
  -- billed until the month after the one they left it in
  used = used + redis.call('ZCOUNT', 'apimon:plan:' .. name .. ':former', fmt(billed_before), '+inf')
  old[name] = h
  if h[6] == '1' and plans[name] and plans[name].retired ~= '1' then
    bad(plans[name].path .. '.retired', 'plan ' .. name .. ' is retired: retiring a plan is final')
  end
  if used > 0 then
    if not plans[name] then
      apimon_err('conflict', 'plan ' .. name .. ' is used by ' .. used ..
        ' subscription(s) that can still be used or billed')
    elseif plans[name].product ~= h[1] then
      apimon_err('conflict', 'plan ' .. name .. ' is used by ' .. used ..
        ' subscription(s) and cannot move from product ' .. tostring(h[1]))
    end
  end
end
local old_products = redis.call('SMEMBERS', 'apimon:products')
local old_apis, old_state = {}, {}
for _, name in ipairs(old_products) do
  local h = redis.call('HMGET', 'apimon:product:' .. name, 'apis', 'state')
  old_apis[name], old_state[name] = h[1], h[2] or 'active'
end

-- The lifecycle transitions, audited (lib.lua apimon_audit).
for _, name in ipairs(old_products) do
  local p = products[name]
  if not p then
    apimon_audit(who, '', now, 'product.remove', name, { state = old_state[name] }, nil)
  elseif p.state ~= old_state[name] then
    apimon_audit(who, '', now, 'product.' .. (p.state == 'active' and 'activate' or 'deactivate'), name,
                 { state = old_state[name] }, { state = p.state })
  end
end
for _, name in ipairs(old_plans) do
  if not plans[name] then
    apimon_audit(who, '', now, 'plan.remove', name, { product = old[name][1] }, nil)
  elseif plans[name].retired == '1' and old[name][6] ~= '1' then
    apimon_audit(who, '', now, 'plan.retire', name, { retired = false }, { retired = true })
  end
end

-- Writes.
for _, name in ipairs(old_products) do
  if not products[name] then
    redis.call('DEL', 'apimon:product:' .. name)
    redis.call('SREM', 'apimon:products', name)
  end
end
for _, name in ipairs(old_plans) do
  if not plans[name] then
    redis.call('DEL', 'apimon:plan:' .. name, 'apimon:plan:' .. name .. ':subs', 'apimon:plan:' .. name .. ':prices',
      'apimon:plan:' .. name .. ':former')
    redis.call('SREM', 'apimon:plans', name)
  end
end
for name, p in pairs(products) do
  local k = 'apimon:product:' .. name
  redis.call('DEL', k)
  redis.call('HSET', k, 'name', name, 'displayName', p.displayName, 'description', p.description, 'apis', p.apis,
    'defaultPlan', p.defaultPlan, 'nplans', fmt(p.nplans), 'state', p.state)
  if p.changeTo ~= '' then redis.call('HSET', k, 'changeTo', p.changeTo) end
  redis.call('SADD', 'apimon:products', name)
end
-- Price versions: member "<ms>|<pricing>" scored by the ms it takes effect.
-- A plan met for the first time has its price since ever (0); from eff on,
-- this catalog's price replaces every version there was.  The hash keeps
-- the price in force now.
local function price_versions(k, p, o)
  local vk = k .. ':prices'
  if redis.call('EXISTS', vk) == 0 then
    redis.call('ZADD', vk, 0, '0|' .. ((o and o[7]) or p.pricing))
  end
  redis.call('ZREMRANGEBYSCORE', vk, fmt(eff), '+inf')
  local last = redis.call('ZREVRANGEBYSCORE', vk, '(' .. fmt(eff), '-inf', 'LIMIT', 0, 1)[1]
  if not last or last:match('^%d+|(.*)$') ~= p.pricing then
    redis.call('ZADD', vk, eff, fmt(eff) .. '|' .. p.pricing)
  end
  local cur = redis.call('ZREVRANGEBYSCORE', vk, fmt(now), '-inf', 'LIMIT', 0, 1)[1]
  return cur and cur:match('^%d+|(.*)$') or p.pricing
end

for name, p in pairs(plans) do
  local k = 'apimon:plan:' .. name
  local pricing = price_versions(k, p, old[name])
  redis.call('DEL', k)
  redis.call('HSET', k, 'name', name, 'product', p.product, 'displayName', p.displayName,
    'approval', p.approval, 'suspension', p.suspension, 'rate_n', fmt(p.rate_n), 'rate_w', fmt(p.rate_w),
    'quota_n', fmt(p.quota_n), 'quota_unit', p.quota_unit, 'pricing', pricing, 'json', p.json,
    'retired', p.retired)
  redis.call('SADD', 'apimon:plans', name)
  -- Refresh the limits mirrored into subscriptions when they changed.
  local o = old[name]
  local apis = products[p.product].apis
  if o and (o[2] ~= fmt(p.rate_n) or o[3] ~= fmt(p.rate_w) or o[4] ~= fmt(p.quota_n) or
            o[5] ~= p.quota_unit or old_apis[p.product] ~= apis) then
    for _, id in ipairs(redis.call('SMEMBERS', k .. ':subs')) do
      redis.call('HSET', 'apimon:sub:{' .. id .. '}', 'apis', apis, 'rate_n', fmt(p.rate_n),
        'rate_w', fmt(p.rate_w), 'quota_n', fmt(p.quota_n), 'quota_unit', p.quota_unit)
      redis.call('HINCRBY', 'apimon:sub:{' .. id .. '}', 'ver', 1)
      sub_policy_sync('apimon:sub:{' .. id .. '}')
    end
  end
end

local v = redis.call('HINCRBY', 'apimon:catalog', 'version', 1)
redis.call('HSET', 'apimon:catalog', 'applied_ms', fmt(now), 'json', text)
return v
end)
