-- check: the per-request decision (hot path), for a batch of requests.
-- KEYS[i] is the subscription of request i; ARGV (the check's layout in
-- schema/README.md; its counts are named in core.lua): now, the number of
-- locations L, L groups of CHECK_LOC_ARGS (api, rate n, rate w, quota n,
-- quota unit, scope), then per request CHECK_REQ_ARGS: its key digest and
-- location number (1..L), then optionally the batch id
-- "<worker>:<slot>:<seq>": the script then records what it counted under
-- apimon:batch:<worker>:<slot>, so that check_refund can undo it for
-- requests that got no answer from it.
-- Each request is decided as if it were alone, in
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
local nowu = now * 1000   -- GCRA runs in microseconds (core.lua)
local n, nloc = #KEYS, tonumber(ARGV[2]) or -1
local rbase = CHECK_HEAD_ARGS + CHECK_LOC_ARGS * nloc   -- ARGV before the requests'
local nargs = rbase + CHECK_REQ_ARGS * n                -- ... and before the batch id
local bid = ARGV[nargs + 1]
if nloc < 0 or #ARGV < nargs or #ARGV > nargs + 1 then
  apimon_err('bad_request', 'check: ARGV must be now, L, L locations of ' .. CHECK_LOC_ARGS .. ', ' ..
    CHECK_REQ_ARGS .. ' per key and a batch id')
end
local bkey
if bid then
  bkey = bid:match('^([%w._-]+:%d+):%d+$')
  if not bkey then apimon_err('bad_request', 'check: bad batch id: ' .. bid) end
end
local tonumber, max = tonumber, math.max

local PRE = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$'
local SECS = { minute = '60', hour = '3600', day = '86400', week = '604800' }

local QRE = '^(%a+):(%d+):(%d+):(%d+):(%d+)$'

-- Subscriptions of the batch: sk -> g. g.raw holds hash fields as read
-- (false: absent), g.w the window states in use: rate { tat (us or nil) },
-- quota { unit, stamp, s, e (period ms), used, old (state of another period,
-- to archive), scope }; g.dirty lists the fields to write at the end.
local G, order = {}, {}

local function load(sk, rf, qf)
  local f
  if rf then
    f = redis.call('HMGET', sk, 'kp', 'ks', 'pol', 'c:rate:plan', 'c:quota:plan', rf, qf)
  else
    f = redis.call('HMGET', sk, 'kp', 'ks', 'pol', 'c:rate:plan', 'c:quota:plan')
  end
  local g = { sk = sk, kp = f[1], ks = f[2], w = {}, dirty = {},
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
  local _, st, _, e, c = old:match(QRE)
  e = tonumber(e)
  if c and c ~= '0' and e + 62 * DAY_MS > now then
    redis.call('SET', sk .. ':quota:' .. scope .. ':' .. st, c, 'PXAT', fmt(e + 62 * DAY_MS))
  end
end

-- write a quota state now (the rare case of one field used with two units
-- in a batch: two locations of one scope with different periods)
local function quota_text(w)
  return sfmt('%s:%s:%d:%d:%d', w.unit, w.stamp, w.s, w.e, w.used)
end

local function quota_settle(g, field, w)
  if w.dirty then
    local v = quota_text(w)
    redis.call('HSET', g.sk, field, v)
    if w.old then archive(g.sk, w.scope, w.old) end
    g.raw[field] = v
  end
  g.w[field] = nil
  g.fmt = nil   -- its period seconds may change
end

-- State v: "<unit>:<stamp>:<start ms>:<end ms>:<count>" of the latest
-- period counted: the current one when now is in it. Another period starts
-- from its stamped key: archived earlier (the clock went back), or a
-- counter of the earlier one-key-per-counter layout. Period seconds, reset
-- and retry seconds are computed once per state.
local function quota_state(g, field, scope, unit)
  local w = g.w[field]
  if w and w.unit ~= unit then quota_settle(g, field, w) w = nil end
  if w then return w end
  local v = raw(g, field)
  local u, st, s, e, c
  if v then u, st, s, e, c = v:match(QRE) end
  if u == unit then s, e = tonumber(s), tonumber(e) end
  if u == unit and s and now >= s and now < e then
    w = { unit = unit, stamp = st, s = s, e = e, used = tonumber(c), scope = scope }
  else
    s, e, st = period(unit, now)
    w = { unit = unit, stamp = st, s = s, e = e, scope = scope, old = v,
          used = tonumber(redis.call('GET', g.sk .. ':quota:' .. scope .. ':' .. st) or '0') }
  end
  w.secs = SECS[unit] or fmt(idiv(e - s, 1000))
  w.reset = ceil_s(e - now)
  w.retry = max(w.reset, 1)
  g.w[field] = w
  return w
end

-- usage: uk -> field -> calls, added at the end
local U, uorder, day, uksuffix = {}, {}

-- the locations of the batch: api, needle (",api,"), usage fields by
-- reason, rate n and w (strings), GCRA t and cap (nil: no rate), quota n
-- (string, number; 0: none), unit, scope, state fields
local locs = {}
for j = 1, nloc do
  local a = CHECK_HEAD_ARGS + CHECK_LOC_ARGS * (j - 1) + 1
  local api, lrn, lrw, lqn, lqu, scope = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local l = { api = api, needle = ',' .. api .. ',', fields = {}, lrn = lrn, lrw = lrw, lqn = lqn,
              nlqn = tonumber(lqn) or 0, lqu = lqu, scope = 'loc.' .. scope,
              rf = 'c:rate:loc.' .. scope, qf = 'c:quota:loc.' .. scope }
  local rn, rw = tonumber(lrn) or 0, tonumber(lrw) or 0
  if rn > 0 and rw > 0 then l.lt, l.lcap = gcra_params(rn, rw) end
  l.lq = l.nlqn > 0 and lqu ~= ''
  locs[j] = l
end
local nums = {}   -- the numbers of one reply, reused

local function count(g, l, reason)
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
  local fk = l.fields[reason]
  if not fk then
    fk = day .. '|' .. l.api .. '|' .. reason
    l.fields[reason] = fk
  end
  u[fk] = (u[fk] or 0) + 1
end

local function dirty(g, field, w)
  w.dirty = true
  local d = g.dirty
  d[#d + 1] = field
end

-- The reply's format for subscription g at location l: everything but
-- the result, retry-after and the windows' remaining and reset (plan and
-- product names are [A-Za-z0-9._-]: no '%' to escape).
local function reply_format(g, l, w2, w4)
  local f = '%s' .. g.head .. '%d'
  if g.pt then f = f .. '|plan-rate|' .. g.prn .. '|' .. g.prw .. '|%d|%d' end
  if w2 then f = f .. '|plan-quota|' .. g.pqs .. '|' .. w2.secs .. '|%d|%d' end
  if l.lt then f = f .. '|loc-rate|' .. l.lrn .. '|' .. l.lrw .. '|%d|%d' end
  if w4 then f = f .. '|loc-quota|' .. l.lqn .. '|' .. w4.secs .. '|%d|%d' end
  g.fmt, g.floc = f, l
  return f
end

local function check1(sk, digest, l)
  local lt, lq, crf, cqf = l.lt, l.lq, l.rf, l.qf
  local lr = lt ~= nil

  local g = G[sk]
  if not g then
    if lr or lq then g = load(sk, crf, cqf) else g = load(sk) end
  end
  if not g.kp or digest == '' or (digest ~= g.kp and digest ~= g.ks) then
    return 'invalid_key||||0', '-'
  end
  if g.inactive then
    count(g, l, 'inactive')
    return 'inactive' .. g.head .. '0', 'i'
  end
  if not g.apis:find(l.needle, 1, true) then
    count(g, l, 'not_entitled')
    return 'not_entitled' .. g.head .. '0', 'n'
  end

  -- every configured window, in reply order (GCRA: see core.lua); nums
  -- gets each window's remaining and reset as if this call is counted;
  -- b1/b3 (rate) and k2..k4 (index in nums) mark the windows that passed
  local rate_refused, quota_refused, retry, k = false, false, 0, 0
  local w1, w2, w3, w4, t1, t3, tat, new, d, b1, b3, k2, k3, k4

  if g.pt then
    w1 = g.w['c:rate:plan'] or rate_state(g, 'c:rate:plan')
    tat = w1.tat or nowu
    if tat < nowu then tat = nowu end
    new = tat + g.pt
    d = new - nowu
    if d <= g.pcap then
      t1, b1 = new, tat
      nums[1], nums[2] = floor((g.pcap - d) / g.pt), ceil_us(d)
    else
      rate_refused = true
      retry = max(ceil_us(d - g.pcap), 1)
      nums[1], nums[2] = floor((g.pcap - (tat - nowu)) / g.pt), ceil_us(tat - nowu)
    end
    k = 2
  end
  if g.pqn then
    w2 = g.w['c:quota:plan']
    if not w2 or w2.unit ~= g.pqu then w2 = quota_state(g, 'c:quota:plan', 'plan', g.pqu) end
    if w2.used < g.pqn then
      k2 = k + 1
      nums[k2] = g.pqn - w2.used - 1
    else
      quota_refused = true
      if w2.retry > retry then retry = w2.retry end
      nums[k + 1] = max(g.pqn - w2.used, 0)
    end
    nums[k + 2] = w2.reset
    k = k + 2
  end
  if lr then
    w3 = g.w[crf] or rate_state(g, crf)
    tat = w3.tat or nowu
    if tat < nowu then tat = nowu end
    new = tat + lt
    d = new - nowu
    local lcap = l.lcap
    if d <= lcap then
      t3, b3, k3 = new, tat, k + 1
      nums[k + 1], nums[k + 2] = floor((lcap - d) / lt), ceil_us(d)
    else
      rate_refused = true
      retry = max(retry, ceil_us(d - lcap), 1)
      nums[k + 1], nums[k + 2] = floor((lcap - (tat - nowu)) / lt), ceil_us(tat - nowu)
    end
    k = k + 2
  end
  if lq then
    local nlqn = l.nlqn
    w4 = g.w[cqf]
    if not w4 or w4.unit ~= l.lqu then w4 = quota_state(g, cqf, l.scope, l.lqu) end
    if w4.used < nlqn then
      k4 = k + 1
      nums[k4] = nlqn - w4.used - 1
    else
      quota_refused = true
      if w4.retry > retry then retry = w4.retry end
      nums[k + 1] = max(nlqn - w4.used, 0)
    end
    nums[k + 2] = w4.reset
    k = k + 2
  end

  local f = g.fmt
  if g.floc ~= l or not f then f = reply_format(g, l, w2, w4) end

  if quota_refused or rate_refused then
    -- not counted: a window that passed shows its state without this call
    -- (plan-rate at index 1 of nums, the others at k2, k3, k4)
    if b1 then nums[1], nums[2] = floor((g.pcap - (b1 - nowu)) / g.pt), ceil_us(b1 - nowu) end
    if k2 then nums[k2] = nums[k2] + 1 end
    if b3 then nums[k3], nums[k3 + 1] = floor((l.lcap - (b3 - nowu)) / lt), ceil_us(b3 - nowu) end
    if k4 then nums[k4] = nums[k4] + 1 end
  end

  if quota_refused then
    count(g, l, 'quota_exceeded')
    return sfmt(f, 'quota_exceeded', retry, unpack(nums, 1, k)), 'q'
  elseif rate_refused then
    count(g, l, 'rate_limited')
    return sfmt(f, 'rate_limited', retry, unpack(nums, 1, k)), 'r'
  end

  -- all passed: count in every window (written at the end)
  if w1 then
    w1.tat = t1
    if not w1.dirty then dirty(g, 'c:rate:plan', w1) end
  end
  if w2 then
    w2.used = w2.used + 1
    if not w2.dirty then dirty(g, 'c:quota:plan', w2) end
  end
  if w3 then
    w3.tat = t3
    if not w3.dirty then dirty(g, crf, w3) end
  end
  if w4 then
    w4.used = w4.used + 1
    if not w4.dirty then dirty(g, cqf, w4) end
  end
  count(g, l, 'ok')
  return sfmt(f, 'allowed', 0, unpack(nums, 1, k)), 'a'
end

-- for the batch record (check_refund): per request what was counted (the
-- first letter of the result; '-' nothing) and its location
local reply, cl, counted = {}, {}, false
for i = 1, n do
  local a = rbase + CHECK_REQ_ARGS * i   -- the location number; the digest before it
  local l, ok, res, code = locs[tonumber(ARGV[a])]
  if l then
    ok, res, code = pcall(check1, KEYS[i], ARGV[a - 1], l)
  else
    ok, res = false, 'no such location: ' .. tostring(ARGV[a])
  end
  if not ok then
    -- this request alone fails; it changed nothing
    if type(res) == 'table' then res = res.apimon or res.err end
    res, code = '!' .. tostring(res), '-'
  end
  reply[i] = res
  cl[RECORD_REQ * i - 1], cl[RECORD_REQ * i] = code, ARGV[a]
  if code ~= '-' then counted = true end
end

-- the writes: one HSET per subscription, archives, usage counts
for _, sk in ipairs(order) do
  local g = G[sk]
  local d = g.dirty
  if #d > 0 then
    local hs = {}
    for i, field in ipairs(d) do
      local w = g.w[field]
      hs[2 * i - 1] = field
      if w.unit then hs[2 * i] = quota_text(w) else hs[2 * i] = fmt(w.tat) end
    end
    redis.call('HSET', sk, unpack(hs))
    for _, field in ipairs(d) do
      local w = g.w[field]
      if w.old then archive(sk, w.scope, w.old) end
    end
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
if bid and counted then
  -- lines: RECORD_HEAD (the id, now, L), the locations as given, the
  -- keys, RECORD_REQ per request; kept for a minute: a refund comes within
  -- seconds of a reconnect
  local concat = table.concat
  redis.call('SET', 'apimon:batch:' .. bkey, bid .. '\n' .. fmt(now) .. '\n' ..
    concat(ARGV, '\n', 2, rbase) --[[ L, the locations ]] .. '\n' .. concat(KEYS, '\n') .. '\n' .. concat(cl, '\n'),
    'PX', 60000)
end
return reply
end)
