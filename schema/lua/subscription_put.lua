-- subscription_put: update a subscription's own fields: its attributes (the
-- whole list). The other members of the resource may be sent back as read
-- (ignored when unchanged; a change is refused by name: the state changes
-- by its actions). ARGV: 1-5 apimon_mgmt_args, 6 JSON of fields,
-- 7 If-Match (optional).
return apimon_run(function()
apimon_schema_check()
local sk = KEYS[1]
local m, text, cond = apimon_mgmt_args()
local now = m.now
local h = sub_load(sk, m.kind, m.owner, m.now)
local ok, body = pcall(cjson.decode, text or '')
if not ok or type(body) ~= 'table' then apimon_err('bad_request', 'body: not a JSON object') end

-- public member -> its field in the hash ('' when always ignored)
local SHOWN = { name = 'id', apiproduct = 'product', plan = 'plan', state = 'state', startTime = 'startTime',
                endTime = 'endTime', developer = 'owner', appGroup = 'owner', createdAt = '',
                lastModifiedAt = '', quota = '' }
local attrs
for k, v in pairs(body) do
  local f = SHOWN[k]
  if k == 'attributes' then
    attrs = apimon_attributes(v, 'attributes')
  elseif f == nil then
    apimon_err('bad_request', tostring(k) .. ': unknown field')
  elseif f ~= '' and (type(v) == 'number' and fmt(v) or tostring(v)) ~= (h[f] or '') then
    local how = k == 'state' and ' (use :activate, :suspend, :resume, :cancel or :expire)' or ''
    apimon_err('bad_request', k .. ': cannot be changed' .. how)
  end
end
apimon_if_match(h, cond, 'subscription')
if attrs then redis.call('HSET', sk, 'attributes', attrs) end
redis.call('HSET', sk, 'lastModifiedAt', fmt(now))
redis.call('HINCRBY', sk, 'ver', 1)
local after = sub_public(hash_table(redis.call('HGETALL', sk)))
apimon_audit(m.who, m.addr, now, 'subscription.update', h.id, sub_public(h), after)
return cjson.encode(after)
end)
