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

-- Rules (schema/README.md, "Rules"): rateLimit and quota are one rule
-- object or a list of them; stored normalized in apimon:plan:<name>:rules.
local RATE_PER = { second = 1, minute = 60, hour = 3600, day = 86400 }
local QUOTA_PERIOD = { second = true, minute = true, hour = true, day = true, week = true, month = true }
local MIRROR_UNIT = { minute = true, hour = true, day = true, week = true, month = true }
local WEEK_DAYS = { monday = true, tuesday = true, wednesday = true, thursday = true, friday = true,
                    saturday = true, sunday = true }
local RULE_FIELDS = {
  rate = { name = true, limit = true, per = true, interval = true, violationMessage = true },
  quota = { name = true, limit = true, period = true, interval = true, blockOnBreach = true, notify = true,
            frequency = true, violationMessage = true },
}
local MAX_RULES, MAX_INTERVAL, MAX_NOTIFY, MAX_WEBHOOKS = 8, 1000, 10, 8

local function is_list(v)
  if type(v) ~= 'table' then return false end
  if next(v) == nil then return true end   -- cjson reads [] and {} alike
  for k in pairs(v) do
    if type(k) ~= 'number' then return false end
  end
  return true
end

local function rule_check(kind, r, path, names, default_name)
  if type(r) ~= 'table' or is_list(r) then bad(path, 'must be an object') end
  for k in pairs(r) do
    if not RULE_FIELDS[kind][k] then
      if RULE_FIELDS.rate[k] or RULE_FIELDS.quota[k] then bad(path .. '.' .. k, 'not used by ' .. kind .. ' rules') end
      bad(path .. '.' .. tostring(k), 'unknown field')
    end
  end
  local name = r.name
  if name == nil then name = default_name end
  if not valid_name(name) then bad(path .. '.name', 'must match ^[A-Za-z0-9._-]{1,64}$') end
  if names[name] then bad(path .. '.name', 'duplicate rule name ' .. name) end
  names[name] = true
  if not is_int(r.limit, 1) then bad(path .. '.limit', 'must be an integer >= 1') end
  local n = r.interval
  if n == nil then n = 1 end
  if not is_int(n, 1) or n > MAX_INTERVAL then bad(path .. '.interval', 'must be an integer from 1 to 1000') end
  local msg = r.violationMessage
  if msg ~= nil and (type(msg) ~= 'string' or #msg > 256) then
    bad(path .. '.violationMessage', 'must be a string of at most 256 bytes')
  end
  local out = { name = name, limit = r.limit, interval = n, violationMessage = msg or '' }
  if kind == 'rate' then
    if not RATE_PER[r.per] then bad(path .. '.per', 'must be second, minute, hour or day') end
    out.per, out.window = r.per, n * RATE_PER[r.per]
    return out
  end
  if not QUOTA_PERIOD[r.period] then bad(path .. '.period', 'must be second, minute, hour, day, week or month') end
  out.period = r.period
  local block = r.blockOnBreach
  if block == nil then block = true end
  if type(block) ~= 'boolean' then bad(path .. '.blockOnBreach', 'must be true or false') end
  out.blockOnBreach = block
  local freq = r.frequency
  if freq == nil then freq = 'once' end
  if freq ~= 'once' and freq ~= 'every' then bad(path .. '.frequency', 'must be once or every') end
  out.frequency = freq
  out.notify = {}
  if r.notify ~= nil then
    if not is_list(r.notify) then bad(path .. '.notify', 'must be an array of percentages') end
    if #r.notify > MAX_NOTIFY then bad(path .. '.notify', 'at most 10 thresholds') end
    for j, t in ipairs(r.notify) do
      local tp = path .. '.notify[' .. (j - 1) .. ']'
      if not is_int(t, 1) or t > 1000 then bad(tp, 'must be an integer percentage from 1 to 1000') end
      if j > 1 and t <= r.notify[j - 1] then bad(tp, 'thresholds must be ascending') end
      out.notify[j] = t
    end
  end
  return out
end

-- rateLimit or quota of a plan: nil, one rule, or a list; normalized list
local function rules_of(kind, v, path, names)
  local out = {}
  if v == nil or v == cjson.null then return out end
  local base = kind == 'rate' and 'plan-rate' or 'plan-quota'
  if type(v) ~= 'table' then bad(path, 'must be an object or an array of them') end
  if not is_list(v) then
    out[1] = rule_check(kind, v, path, names, base)
    return out
  end
  if #v > MAX_RULES then bad(path, 'at most 8 rules') end
  for j, r in ipairs(v) do
    out[j] = rule_check(kind, r, path .. '[' .. (j - 1) .. ']', names, j == 1 and base or base .. '-' .. j)
  end
  return out
end

local function webhooks_of(v, path)
  local out = {}
  if v == nil or v == cjson.null then return out end
  if not is_list(v) then bad(path, 'must be an array') end
  if #v > MAX_WEBHOOKS then bad(path, 'at most 8 webhooks') end
  for j, w in ipairs(v) do
    local wp = path .. '[' .. (j - 1) .. ']'
    if type(w) ~= 'table' or is_list(w) then bad(wp, 'must be an object') end
    for k in pairs(w) do
      if k ~= 'url' and k ~= 'secretFile' then bad(wp .. '.' .. tostring(k), 'unknown field') end
    end
    if type(w.url) ~= 'string' or #w.url > 2048 or not (w.url:match('^https?://[^%s%c]+$')) then
      bad(wp .. '.url', 'must be an http:// or https:// URL without spaces, at most 2048 bytes')
    end
    if type(w.secretFile) ~= 'string' or #w.secretFile > 4096 or w.secretFile:sub(1, 1) ~= '/' then
      bad(wp .. '.secretFile', 'must be an absolute path (the file holds the signing secret)')
    end
    out[j] = { url = w.url, secretFile = w.secretFile }
  end
  return out
end

-- cjson encodes an empty table as {}: the stored lists are always arrays
-- (notify is the one list inside a rule)
local function json_list(t)
  if #t == 0 then return '[]' end
  return (cjson.encode(t):gsub('"notify":{}', '"notify":[]'))
end

local week_start = doc.weekStart
if week_start == nil or week_start == cjson.null then week_start = 'monday' end
if not WEEK_DAYS[week_start] then bad('weekStart', 'must be a day of the week, monday to sunday') end
local top_webhooks = webhooks_of(doc.webhooks, 'webhooks')

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
  local names = {}
  local rates = rules_of('rate', p.rateLimit, path .. '.rateLimit', names)
  local quotas = rules_of('quota', p.quota, path .. '.quota', names)
  -- the subscription's mirrored limits (pol) stay today's one rate and one
  -- quota: the first rate rule, the first quota rule when it is 1 unit of
  -- minute ... month (other quota rules are only in :rules)
  local rn, rw, qn, qu = 0, 0, 0, ''
  if rates[1] then rn, rw = rates[1].limit, rates[1].window end
  if quotas[1] and quotas[1].interval == 1 and MIRROR_UNIT[quotas[1].period] then
    qn, qu = quotas[1].limit, quotas[1].period
  end
  local hooks = webhooks_of(p.webhooks, path .. '.webhooks')
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
    rates = json_list(rates), quotas = json_list(quotas), webhooks = json_list(hooks),
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
      'apimon:plan:' .. name .. ':former', 'apimon:plan:' .. name .. ':rules')
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
  redis.call('HSET', k .. ':rules', 'rate', p.rates, 'quota', p.quotas, 'webhooks', p.webhooks)
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
redis.call('HSET', 'apimon:catalog:settings', 'weekStart', week_start, 'webhooks', json_list(top_webhooks))
return v
end)
