-- billing_line: compare-and-set one ledger line, so two agents cannot both
-- move the same line (e.g. both post it).
return apimon_run(function()
apimon_schema_check()
local bk, field, expected, text = KEYS[1], ARGV[1], ARGV[2] or '', ARGV[3]
apimon_now(ARGV[4])
if not bk:match('^apimon:bill:%d%d%d%d%d%d$') then apimon_err('bad_request', 'not a ledger key') end
if type(field) ~= 'string' or not field:match('^[^|]+|[^|]+$') then
  apimon_err('bad_request', 'field must be <sub>|<line>')
end
local STATES = { computed = true, posted = true, done = true, failed = true }
local ok, new = pcall(cjson.decode, text or '')
if not ok or type(new) ~= 'table' or not STATES[new.state] then
  apimon_err('bad_request', 'new line: JSON object with state computed|posted|done|failed expected')
end
local cur = redis.call('HGET', bk, field)
local state = ''
if cur then
  local ok2, old = pcall(cjson.decode, cur)
  state = (ok2 and type(old) == 'table' and type(old.state) == 'string') and old.state or '?'
end
if state ~= expected then
  apimon_err('conflict', 'line ' .. field .. ' is ' .. (state == '' and 'absent' or state) ..
    ', expected ' .. (expected == '' and 'absent' or expected))
end
redis.call('HSET', bk, field, text)
return 1
end)
