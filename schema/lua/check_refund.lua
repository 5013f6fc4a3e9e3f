-- check_refund: undo what one check batch counted for requests that got
-- no answer from it (client gone, timeout, connection lost).
-- KEYS[1] = apimon:batch:<worker>:<slot> (the check's record: the check's
-- layout in schema/README.md, its counts named in core.lua); ARGV: 1 the
-- batch id "<worker>:<slot>:<seq>", 2 the requests to refund: "*" (all) or
-- their numbers in the batch, comma-separated ("2,5").
-- Reply: the number of requests refunded; 0 when the record is gone or is
-- another batch's (never run, refunded already, or expired). The record is
-- deleted: a second refund of the same batch changes nothing.
return apimon_run(function()
local bk, bid, which = KEYS[1], ARGV[1], ARGV[2]
if not bid or not which or not bk then
  apimon_err('bad_request', 'check_refund: KEYS batch record, ARGV batch id and requests')
end
local text = redis.call('GET', bk)
if not text then return 0 end
local rec = {}
for line in (text .. '\n'):gmatch('([^\n]*)\n') do rec[#rec + 1] = line end
if rec[1] ~= bid then return 0 end
redis.call('DEL', bk)

local now, nloc = tonumber(rec[2]), tonumber(rec[3])
local base = RECORD_HEAD + CHECK_LOC_ARGS * nloc   -- the lines before the keys
local n = (#rec - base) / (1 + RECORD_REQ)   -- per request a key line, a code and a location line
local day = ymd(now)
local REASON = { a = 'ok', i = 'inactive', n = 'not_entitled', r = 'rate_limited', q = 'quota_exceeded' }

-- a quota window gives back one call of the period that counted it: in the
-- hash while it is still the latest period there, else its archived key
local function quota_back(sk, scope, unit)
  local _, _, stamp = period(unit, now)
  local field = 'c:quota:' .. scope
  local v = redis.call('HGET', sk, field) or ''
  local u, st, s, e, c = v:match('^(%a+):(%d+):(%d+):(%d+):(%d+)$')
  if u == unit and st == stamp then
    if tonumber(c) > 0 then
      redis.call('HSET', sk, field, sfmt('%s:%s:%s:%s:%d', u, st, s, e, tonumber(c) - 1))
    end
  else
    local ak = sk .. ':quota:' .. scope .. ':' .. stamp
    if tonumber(redis.call('GET', ak) or '0') > 0 then redis.call('DECR', ak) end
  end
end

-- a rate window moves its arrival time back one interval (an arrival time
-- in the past is a full burst: giving back more than that changes nothing)
local function rate_back(sk, scope, rn, rw)
  local field = 'c:rate:' .. scope
  local tat = tonumber(redis.call('HGET', sk, field) or '')
  if tat then
    local t = gcra_params(rn, rw)
    redis.call('HSET', sk, field, fmt(tat - t))
  end
end

local function refund(i)
  local r = base + n + RECORD_REQ * (i - 1)
  local sk, code, loc = rec[base + i], rec[r + 1], tonumber(rec[r + 2])
  local reason = REASON[code]
  if not reason or not loc or loc < 1 or loc > nloc then return 0 end
  local a = RECORD_HEAD + CHECK_LOC_ARGS * (loc - 1) + 1
  local api, lrn, lrw, lqn, lqu, scope = rec[a], tonumber(rec[a + 1]) or 0, tonumber(rec[a + 2]) or 0,
    tonumber(rec[a + 3]) or 0, rec[a + 4], 'loc.' .. rec[a + 5]

  local uk, fk = sk .. ':usage:' .. day:sub(1, 6), day .. '|' .. api .. '|' .. reason
  if redis.call('HINCRBY', uk, fk, -1) <= 0 then redis.call('HDEL', uk, fk) end

  if code == 'a' then
    -- the plan's windows as the subscription has them now
    local pol = redis.call('HGET', sk, 'pol') or ''
    local prn, prw, pqn, pqu = pol:match('^[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
    prn, prw, pqn = tonumber(prn) or 0, tonumber(prw) or 0, tonumber(pqn) or 0
    if prn > 0 and prw > 0 then rate_back(sk, 'plan', prn, prw) end
    if pqn > 0 and pqu ~= '' then quota_back(sk, 'plan', pqu) end
    if lrn > 0 and lrw > 0 then rate_back(sk, scope, lrn, lrw) end
    if lqn > 0 and lqu ~= '' then quota_back(sk, scope, lqu) end
  end
  return 1
end

local done = 0
if which == '*' then
  for i = 1, n do done = done + refund(i) end
else
  for i in which:gmatch('%d+') do
    i = tonumber(i)
    if i >= 1 and i <= n then done = done + refund(i) end
  end
end
return done
end)
