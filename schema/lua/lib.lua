-- apimon lib.lua: prepended to every script but check, after core.lua.

local APIMON_SCHEMA = '1'

-- Provisioning scripts stamp the layout version and refuse another one.
local function apimon_schema_check()
  local v = redis.call('GET', 'apimon:schema')
  if not v then
    redis.call('SET', 'apimon:schema', APIMON_SCHEMA)
  elseif v ~= APIMON_SCHEMA then
    apimon_err('schema', 'layout version is ' .. v .. ', scripts expect ' .. APIMON_SCHEMA)
  end
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

-- The times a client may give (startTime, endTime): ms from 2000-01-01 to
-- 9999-12-31T23:59:59.999Z, UTC. Bounded, so that every reader (the check,
-- the billing agent, a client) can hold and print them exactly.
local TIME_MIN, TIME_MAX = 946684800000, 253402300799999
local function apimon_time_arg(arg, name)
  local n = tonumber(arg)
  if n == nil or n ~= floor(n) or n < TIME_MIN or n > TIME_MAX then
    apimon_err('bad_request', name .. ': must be milliseconds since the epoch from ' .. fmt(TIME_MIN) ..
      ' (2000-01-01) to ' .. fmt(TIME_MAX) .. ' (9999-12-31T23:59:59.999Z)')
  end
  return n
end

-- HGETALL reply -> table
local function hash_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Subscription hash -> the record that leaves Redis (no key digests, no
-- check state: the "pol" mirror and the c:* windows), for the audit stream
-- and the management API, which shapes the public resource from it
-- (ngx_http_apimon_admin_json.c).
local function sub_public(h)
  local t = {}
  for k, v in pairs(h) do
    if k ~= 'kp' and k ~= 'ks' and k ~= 'pol' and k:sub(1, 2) ~= 'c:' then t[k] = v end
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

-- The leading arguments of every management script, in this order (the
-- management API fills them in one place, ngx_http_apimon_admin_script):
-- ARGV 1 now (ms; 0 = Redis's clock), 2 who (the token's name; empty: no
-- audit entry), 3 addr (the client's address), 4 owner kind
-- (developer|appgroup), 5 owner (email or name; an empty kind skips the
-- owner check: operator calls). The script's own arguments follow from
-- ARGV[6] on. Returns the leading ones as a table, then the script's own.
local function apimon_mgmt_args()
  local m = { now = apimon_now(ARGV[1]), who = ARGV[2] or '', addr = ARGV[3] or '',
              kind = ARGV[4] or '', owner = ARGV[5] or '' }
  return m, unpack(ARGV, 6)
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

-- Plan changes (schema/README.md, "Plan changes"; subscription_plan.lua).
-- The quota counted in the new plan's current period when the change
-- comes: the check's state is kept as it is when both plans count in the
-- same unit (the used count goes on, the new limit applies to it); for
-- another unit of a day or more, the accepted calls of the subscription's
-- daily usage in the new period so far, written where the check takes a
-- period it has no state for (the period's stamped key); minute and hour
-- periods start from what that key holds (0 when none). The one place
-- that knows the check's quota layout outside check.lua.
local function sub_quota_carry(sk, old_unit, new_n, new_unit, now)
  if new_unit == '' or (tonumber(new_n) or 0) == 0 or new_unit == old_unit then return end
  if new_unit ~= 'day' and new_unit ~= 'week' and new_unit ~= 'month' then return end
  local s, e, stamp = period(new_unit, now)
  local first, last, used, month = ymd(s), ymd(now), 0, nil
  for d = idiv(s, DAY_MS), idiv(now, DAY_MS) do
    local ym = ymd(d * DAY_MS):sub(1, 6)
    if ym ~= month then
      month = ym
      local u = redis.call('HGETALL', sk .. ':usage:' .. ym)
      for i = 1, #u, 2 do
        local f = u[i]
        local day = f:sub(1, 8)
        if day >= first and day <= last and f:sub(-3) == '|ok' then used = used + (tonumber(u[i + 1]) or 0) end
      end
    end
  end
  local qk = sk .. ':quota:plan:' .. stamp
  -- a state of this very period, from a plan held before the one left,
  -- would be taken over the carried count: the count replaces it
  local cur = redis.call('HGET', sk, 'c:quota:plan')
  if cur and cur:sub(1, #new_unit + #stamp + 2) == new_unit .. ':' .. stamp .. ':' then
    redis.call('HDEL', sk, 'c:quota:plan')
  end
  if used > 0 then
    redis.call('SET', qk, fmt(used), 'PXAT', fmt(e + 62 * DAY_MS))
  else
    redis.call('DEL', qk)
  end
end

-- Moves subscription h (hash key sk) to plan of product at ms "at": the
-- mirrored limits and APIs (the check's "pol" through sub_policy_sync), the
-- plan history apimon:sub:{<id>}:plans ("<from ms>|<product>|<plan>",
-- oldest first, the first entry the plan bought), the plans' indexes (the
-- plan left keeps the id in its ":former" zset, scored by when, which
-- holds the plan in the catalog while those days can still be billed).
-- Keys, state, attributes and counters stay.
local function sub_plan_switch(sk, h, product, plan, at, now)
  local p = redis.call('HMGET', 'apimon:plan:' .. plan, 'rate_n', 'rate_w', 'quota_n', 'quota_unit')
  local apis = redis.call('HGET', 'apimon:product:' .. product, 'apis') or ''
  local hk = sk .. ':plans'
  if redis.call('EXISTS', hk) == 0 then
    redis.call('RPUSH', hk, (h.startTime or '0') .. '|' .. (h.product or '') .. '|' .. (h.plan or ''))
  end
  redis.call('RPUSH', hk, fmt(at) .. '|' .. product .. '|' .. plan)
  redis.call('HSET', sk, 'product', product, 'plan', plan, 'apis', apis, 'rate_n', p[1] or '0',
    'rate_w', p[2] or '0', 'quota_n', p[3] or '0', 'quota_unit', p[4] or '', 'lastModifiedAt', fmt(now))
  redis.call('HDEL', sk, 'nextPlan', 'nextProduct', 'nextAt')
  redis.call('HINCRBY', sk, 'ver', 1)
  sub_quota_carry(sk, h.quota_unit or '', p[3], p[4] or '', now)
  redis.call('SREM', 'apimon:plan:' .. (h.plan or '') .. ':subs', h.id)
  redis.call('ZADD', 'apimon:plan:' .. (h.plan or '') .. ':former', at, h.id)
  redis.call('ZREM', 'apimon:plan:' .. plan .. ':former', h.id)
  redis.call('SADD', 'apimon:plan:' .. plan .. ':subs', h.id)
  sub_policy_sync(sk)
end

-- A change "effective": "periodEnd" waits in nextPlan, nextProduct and
-- nextAt; the first management script that loads the subscription at or
-- after nextAt applies it (as of nextAt for the history and the bill), or
-- drops it when the subscription can no longer be used or the plan left
-- the catalog; audited with who "scheduled". Returns the record as now.
local function sub_plan_due(sk, h, now)
  local at = tonumber(h.nextAt)
  if not at or at > now then return h end
  local et = tonumber(h.endTime) or 0
  local ok = (h.state == 'active' or h.state == 'suspended' or h.state == 'submitted') and (et == 0 or et > at) and
    redis.call('EXISTS', 'apimon:plan:' .. (h.nextPlan or '')) == 1
  if ok then
    sub_plan_switch(sk, h, h.nextProduct or h.product, h.nextPlan, at, now)
  else
    redis.call('HDEL', sk, 'nextPlan', 'nextProduct', 'nextAt')
  end
  local nh = hash_table(redis.call('HGETALL', sk))
  apimon_audit('scheduled', '', now, 'subscription.changePlan.' .. (ok and 'applied' or 'dropped'), h.id,
               sub_public(h), sub_public(nh))
  return nh
end

-- Load a subscription for management calls; an empty owner kind skips the
-- owner check (operator calls), a wrong owner looks like a missing one.
-- Given now, a plan change due by then is applied first (sub_plan_due).
local function sub_load(key, kind, owner, now)
  local h = hash_table(redis.call('HGETALL', key))
  if not h.id then apimon_err('not_found', 'no such subscription') end
  if kind and kind ~= '' and (h.owner_kind ~= kind or h.owner ~= owner) then
    apimon_err('not_found', 'no such subscription')
  end
  if now and h.nextAt then h = sub_plan_due(key, h, now) end
  return h
end

-- ETags (schema/README.md "ETags"): every owner and subscription record has
-- a version "ver" that each change made through the management API bumps;
-- its ETag is "\"<ver>\"" (a record from before: version 0). cond is the
-- request's If-Match ('' when it has none): '*' or a list of ETags, one of
-- which must be the record's (strong comparison: a W/ tag never matches).
local function etag_of(h)
  return '"' .. (h.ver or '0') .. '"'
end

local function apimon_if_match(h, cond, what)
  if cond == nil or cond == '' or cond:match('^%s*%*%s*$') then return end
  local etag = etag_of(h)
  for tag in cond:gmatch('[^,]+') do
    if tag:match('^%s*(.-)%s*$') == etag then return end
  end
  apimon_err('precondition', 'If-Match: the ' .. what .. ' has changed (its ETag is ' .. etag .. ')')
end

-- Idempotency keys (schema/README.md "Idempotency"): apimon:idem:<hex>
-- keeps the first answer of a purchase or a key regeneration for 24 hours:
-- the request's fingerprint, the record answered and the new keys sealed by
-- the module (never plaintext here). A replay returns the stored record
-- with "idem_replayed" and "idem_sealed" added; the same key with another
-- fingerprint (path or body) is refused.
local IDEM_TTL = 86400000

local function idem_replay(hex, fp)
  if hex == nil or hex == '' then return nil end
  if not valid_digest(hex) or not valid_digest(fp) then
    apimon_err('bad_request', 'idempotency key digest: not 64 hex digits')
  end
  local h = redis.call('HMGET', 'apimon:idem:' .. hex, 'fp', 'answer', 'sealed')
  if not h[1] then return nil end
  if h[1] ~= fp then
    apimon_err('idempotency', 'Idempotency-Key: already used by a request with another path or body')
  end
  local out = cjson.decode(h[2])
  out.idem_replayed, out.idem_sealed = '1', h[3] or ''
  return cjson.encode(out)
end

local function idem_store(hex, fp, answer, sealed)
  if hex == nil or hex == '' then return end
  local key = 'apimon:idem:' .. hex
  redis.call('HSET', key, 'fp', fp, 'answer', cjson.encode(answer), 'sealed', sealed or '')
  redis.call('PEXPIRE', key, IDEM_TTL)
end

-- Custom attributes, Apigee's shape: [{"name": ..., "value": ...}], at most
-- 18, names 1-255 bytes and unique, values strings of at most 2048 bytes
-- (Apigee's limits). Returns the JSON text kept in the record's
-- "attributes" field ('[]' for none: cjson would write {}).
local ATTR_MAX, ATTR_NAME_MAX, ATTR_VALUE_MAX = 18, 255, 2048
local function apimon_attributes(v, path)
  if v == cjson.null then return '[]' end
  if type(v) ~= 'table' then apimon_err('bad_request', path .. ': must be an array of {"name", "value"}') end
  local n = 0
  for k in pairs(v) do
    if type(k) ~= 'number' then apimon_err('bad_request', path .. ': must be an array of {"name", "value"}') end
    n = n + 1
  end
  if n > ATTR_MAX then apimon_err('bad_request', path .. ': at most ' .. ATTR_MAX .. ' attributes') end
  local seen, out = {}, {}
  for i = 1, n do
    local a, at = v[i], path .. '[' .. (i - 1) .. ']'
    if type(a) ~= 'table' then apimon_err('bad_request', at .. ': must be an object {"name", "value"}') end
    for k in pairs(a) do
      if k ~= 'name' and k ~= 'value' then apimon_err('bad_request', at .. '.' .. tostring(k) .. ': unknown field') end
    end
    if type(a.name) ~= 'string' or #a.name < 1 or #a.name > ATTR_NAME_MAX then
      apimon_err('bad_request', at .. '.name: must be a string of 1 to ' .. ATTR_NAME_MAX .. ' bytes')
    end
    local val = a.value
    if val == nil or val == cjson.null then val = '' end
    if type(val) ~= 'string' or #val > ATTR_VALUE_MAX then
      apimon_err('bad_request', at .. '.value: must be a string of at most ' .. ATTR_VALUE_MAX .. ' bytes')
    end
    if seen[a.name] then apimon_err('bad_request', at .. '.name: duplicate attribute ' .. a.name) end
    seen[a.name] = true
    out[i] = { name = a.name, value = val }
  end
  if n == 0 then return '[]' end
  return cjson.encode(out)
end
