-- check: the per-request decision (hot path), for a batch of requests.
-- KEYS[i] is the subscription of request i; ARGV[1] is now, then 7
-- arguments per request. Each request is decided as if it were alone, in
-- order: a later one sees the counts of an earlier one (the script is
-- atomic, so nobody else can tell that the writes are gathered at the end).
-- Window state lives in the subscription hash (c:rate:<scope>,
-- c:quota:<scope>); a quota period that closed is archived to its stamped
-- key when the next call is counted. Reply: one string per request (see
-- schema/README.md), "!<error>" for a request that failed alone.
--
-- Written for speed (Redis runs it for every API call): per subscription of
-- the batch one HMGET, one HSET and one HINCRBY per usage field, however
-- many of its requests the batch holds; numbers are kept as numbers
-- between requests and printed with one string.format per group.
return apimon_run(function()
local now = apimon_now(ARGV[1])
local n = #KEYS
if #ARGV ~= 1 + 7 * n then
  apimon_err('bad_request', 'check: ARGV must be now and 7 arguments per key')
end
local tonumber, max = tonumber, math.max

local PRE = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$'
local SECS = { minute = '60', hour = '3600', day = '86400', week = '604800' }

-- The quota period of now, per unit, once per batch: state prefix
-- "<unit>:<stamp>:<end ms>:", its length, stamp, period seconds, reset s,
-- retry s.
local periods = {}
local function period_of(unit)
  local p = periods[unit]
  if p then return p end
  local s, e, st = period(unit, now)
  local reset = ceil_s(e - now)
  local pfx = unit .. ':' .. st .. ':' .. fmt(e) .. ':'
  p = { pfx, #pfx, st, SECS[unit] or fmt(idiv(e - s, 1000)), reset, max(reset, 1) }
  periods[unit] = p
  return p
end

-- Subscriptions of the batch: sk -> g. g.raw holds hash fields as read
-- (false: absent), g.w the window states in use: rate { tat (ms or nil) },
-- quota { unit, p (period_of), used, old (state of another period, to
-- archive), scope }; "dirty" ones are written at the end.
local G, order = {}, {}

local function load(sk, rf, qf)
  local f
  if rf then
    f = redis.call('HMGET', sk, 'kp', 'ks', 'pol', 'c:rate:plan', 'c:quota:plan', rf, qf)
  else
    f = redis.call('HMGET', sk, 'kp', 'ks', 'pol', 'c:rate:plan', 'c:quota:plan')
  end
  local g = { sk = sk, kp = f[1], ks = f[2], w = {},
              raw = { ['c:rate:plan'] = f[4] or false, ['c:quota:plan'] = f[5] or false } }
  if rf then g.raw[rf], g.raw[qf] = f[6] or false, f[7] or false end
  G[sk] = g
  if not f[1] then return g end
  order[#order + 1] = sk
  local pol = f[3] or sub_policy_sync(sk)   -- created before "pol" existed: mirror it now
  local state, st, et, plan, product, prn, prw, pqn, pqu, apis = pol:match(PRE)
  if not state then apimon_err('schema', 'bad pol field: ' .. pol) end
  g.head = '|' .. sk:sub(13, -2) .. '|' .. plan .. '|' .. product .. '|'
  g.inactive = state ~= 'active' or (st ~= '0' and now < tonumber(st)) or (et ~= '0' and now >= tonumber(et))
  g.apis = apis
  -- plan windows; the mirrored numbers are canonical decimals, "0" = none
  if prn ~= '0' and prw ~= '0' then
    g.prn, g.prw = prn, prw
    g.pt, g.pcap = gcra_params(tonumber(prn), tonumber(prw))
  end
  if pqn ~= '0' and pqu ~= '' then g.pqn, g.pqs, g.pqu = tonumber(pqn), pqn, pqu end
  return g
end

local function raw(g, field)
  local v = g.raw[field]
  if v == nil then
    v = redis.call('HGET', g.sk, field) or false
    g.raw[field] = v
  end
  return v or nil
end

local function rate_state(g, field)
  local w = g.w[field]
  if not w then
    w = { tat = tonumber(raw(g, field)) }
    g.w[field] = w
  end
  return w
end

local function archive(sk, scope, old)
  local st, e, c = old:match('^%a+:(%d+):(%d+):(%d+)$')
  e = tonumber(e)
  if c and c ~= '0' and e + 62 * DAY_MS > now then
    redis.call('SET', sk .. ':quota:' .. scope .. ':' .. st, c, 'PXAT', fmt(e + 62 * DAY_MS))
  end
end

-- write a quota state now (the rare case of one field used with two units
-- in a batch: two locations of one scope with different periods)
local function quota_settle(g, field, w)
  if w.dirty then
    local v = sfmt('%s%d', w.p[1], w.used)
    redis.call('HSET', g.sk, field, v)
    if w.old then archive(g.sk, w.scope, w.old) end
    g.raw[field] = v
  end
  g.w[field] = nil
end

-- State v: "<unit>:<stamp>:<end ms>:<count>" of the latest period counted:
-- the current one when its prefix is now's. Another period starts from its
-- stamped key: archived earlier (the clock went back), or a counter of the
-- earlier one-key-per-counter layout.
local function quota_state(g, field, scope, unit)
  local w = g.w[field]
  if w and w.unit ~= unit then quota_settle(g, field, w) w = nil end
  if not w then
    local p = period_of(unit)
    local v = raw(g, field)
    if v and v:sub(1, p[2]) == p[1] then
      w = { unit = unit, p = p, used = tonumber(v:sub(p[2] + 1)), scope = scope }
    else
      w = { unit = unit, p = p, scope = scope, old = v,
            used = tonumber(redis.call('GET', g.sk .. ':quota:' .. scope .. ':' .. p[3]) or '0') }
    end
    g.w[field] = w
  end
  return w
end

-- usage: uk -> field -> calls, added at the end
local U, uorder, day, uksuffix = {}, {}
local function count(g, api, reason)
  if not day then
    day = ymd(now)
    uksuffix = ':usage:' .. day:sub(1, 6)
  end
  local uk = g.uk
  if not uk then
    uk = g.sk .. uksuffix
    g.uk = uk
  end
  local u = U[uk]
  if not u then
    u = {}
    U[uk] = u
    uorder[#uorder + 1] = uk
  end
  local fk = day .. '|' .. api .. '|' .. reason
  u[fk] = (u[fk] or 0) + 1
end

-- one-entry caches: the requests of one location share these
local capi, cneedle, cscope, crf, cqf, clrn, clrw, clqn, nlqn, lt, lcap

local function check1(sk, digest, api, lrn, lrw, lqn, lqu, lscope)
  if lscope ~= cscope then
    cscope, crf, cqf = lscope, 'c:rate:loc.' .. lscope, 'c:quota:loc.' .. lscope
  end
  if lrn ~= clrn or lrw ~= clrw or lqn ~= clqn then
    clrn, clrw, clqn = lrn, lrw, lqn
    local rn, rw = tonumber(lrn) or 0, tonumber(lrw) or 0
    nlqn = tonumber(lqn) or 0
    if rn > 0 and rw > 0 then lt, lcap = gcra_params(rn, rw) else lt = nil end
  end
  local lr, lq = lt ~= nil, nlqn > 0 and lqu ~= ''

  local g = G[sk]
  if not g then
    if lr or lq then g = load(sk, crf, cqf) else g = load(sk) end
  end
  if not g.kp or digest == '' or (digest ~= g.kp and digest ~= g.ks) then
    return 'invalid_key||||0'
  end
  if g.inactive then
    count(g, api, 'inactive')
    return 'inactive' .. g.head .. '0'
  end
  if api ~= capi then capi, cneedle = api, ',' .. api .. ',' end
  if not g.apis:find(cneedle, 1, true) then
    count(g, api, 'not_entitled')
    return 'not_entitled' .. g.head .. '0'
  end

  -- every configured window, in reply order (GCRA: see core.lua)
  local rate_refused, quota_refused, retry, out = false, false, 0, ''
  local w1, w2, w3, w4, t1, t3, tat, new, p

  if g.pt then
    w1 = rate_state(g, 'c:rate:plan')
    tat = w1.tat or now
    if tat < now then tat = now end
    new = tat + g.pt
    if new - now <= g.pcap then
      t1 = new
      out = sfmt('|plan-rate|%s|%s|%d|%d', g.prn, g.prw, floor((g.pcap - (new - now)) / g.pt), ceil_s(new - now))
    else
      rate_refused = true
      retry = max(ceil_s(new - now - g.pcap), 1)
      out = sfmt('|plan-rate|%s|%s|%d|%d', g.prn, g.prw, floor((g.pcap - (tat - now)) / g.pt), ceil_s(tat - now))
    end
  end
  if g.pqn then
    w2 = quota_state(g, 'c:quota:plan', 'plan', g.pqu)
    p = w2.p
    if w2.used < g.pqn then
      out = out .. sfmt('|plan-quota|%s|%s|%d|%d', g.pqs, p[4], g.pqn - w2.used - 1, p[5])
    else
      quota_refused = true
      if p[6] > retry then retry = p[6] end
      out = out .. sfmt('|plan-quota|%s|%s|%d|%d', g.pqs, p[4], max(g.pqn - w2.used, 0), p[5])
    end
  end
  if lr then
    w3 = rate_state(g, crf)
    tat = w3.tat or now
    if tat < now then tat = now end
    new = tat + lt
    if new - now <= lcap then
      t3 = new
      out = out .. sfmt('|loc-rate|%s|%s|%d|%d', lrn, lrw, floor((lcap - (new - now)) / lt), ceil_s(new - now))
    else
      rate_refused = true
      retry = max(retry, ceil_s(new - now - lcap), 1)
      out = out .. sfmt('|loc-rate|%s|%s|%d|%d', lrn, lrw, floor((lcap - (tat - now)) / lt), ceil_s(tat - now))
    end
  end
  if lq then
    w4 = quota_state(g, cqf, 'loc.' .. lscope, lqu)
    p = w4.p
    if w4.used < nlqn then
      out = out .. sfmt('|loc-quota|%s|%s|%d|%d', lqn, p[4], nlqn - w4.used - 1, p[5])
    else
      quota_refused = true
      if p[6] > retry then retry = p[6] end
      out = out .. sfmt('|loc-quota|%s|%s|%d|%d', lqn, p[4], max(nlqn - w4.used, 0), p[5])
    end
  end

  if quota_refused then
    count(g, api, 'quota_exceeded')
    return sfmt('quota_exceeded%s%d%s', g.head, retry, out)
  elseif rate_refused then
    count(g, api, 'rate_limited')
    return sfmt('rate_limited%s%d%s', g.head, retry, out)
  end

  -- all passed: count in every window (written at the end)
  if w1 then w1.tat, w1.dirty = t1, true end
  if w2 then w2.used, w2.dirty = w2.used + 1, true end
  if w3 then w3.tat, w3.dirty = t3, true end
  if w4 then w4.used, w4.dirty = w4.used + 1, true end
  count(g, api, 'ok')
  return 'allowed' .. g.head .. '0' .. out
end

local reply = {}
for i = 1, n do
  local a = 7 * i - 5
  local ok, res = pcall(check1, KEYS[i], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
                        ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
  if not ok then
    -- this request alone fails; it changed nothing
    if type(res) == 'table' then res = res.apimon or res.err end
    res = '!' .. tostring(res)
  end
  reply[i] = res
end

-- the writes: one HSET per subscription, archives, usage counts
for _, sk in ipairs(order) do
  local g = G[sk]
  local hs, k = {}, 0
  for field, w in pairs(g.w) do
    if w.dirty then
      hs[k + 1] = field
      if w.unit then
        hs[k + 2] = sfmt('%s%d', w.p[1], w.used)
      else
        hs[k + 2] = fmt(w.tat)
      end
      k = k + 2
    end
  end
  if k > 0 then redis.call('HSET', sk, unpack(hs)) end
  for _, w in pairs(g.w) do
    if w.dirty and w.old then archive(sk, w.scope, w.old) end
  end
end
for _, uk in ipairs(uorder) do
  local armed
  for fk, c in pairs(U[uk]) do
    -- a new field may mean a new hash: (re)arm its expiry, 400 days after the month
    if redis.call('HINCRBY', uk, fk, c) == c and not armed then
      local _, mend = period('month', now)
      redis.call('PEXPIREAT', uk, mend + 400 * DAY_MS)
      armed = true
    end
  end
end
return reply
end)
