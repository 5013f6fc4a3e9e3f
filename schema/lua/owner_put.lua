-- owner_put: create or update a developer or an app group (the owner of
-- the leading arguments). ARGV: 1-5 apimon_mgmt_args, 6 JSON of fields,
-- 7 mode (create|update), 8 If-Match (optional, update only).
return apimon_run(function()
apimon_schema_check()
local m, text, mode, cond = apimon_mgmt_args()
local kind, id, now = m.kind, m.owner, m.now

-- settable fields per kind; the id field itself may be repeated if equal;
-- ro: read-only (ignored, so that a fetched record can be sent back)
local FIELDS = {
  developer = { idf = 'email', list = { 'firstName', 'lastName', 'userName', 'customer' }, ro = 'developerId' },
  appgroup = { idf = 'name', list = { 'displayName', 'customer' }, ro = 'appGroupId' },
}
-- Apigee owner fields apimon does not keep: refused by name
local NOT_KEPT = { apps = true, companies = true, organizationName = true, appFamily = true,
                   accessType = true, channelUri = true, channelId = true, organization = true }
local spec = FIELDS[kind]
if not spec then apimon_err('bad_request', 'kind must be developer or appgroup') end
if not valid_owner(kind, id) then
  if kind == 'developer' then apimon_err('bad_request', 'email: not an email address') end
  apimon_err('bad_request', 'name: must match ^[A-Za-z0-9._-]{1,64}$')
end
if mode ~= 'create' and mode ~= 'update' then apimon_err('bad_request', 'mode must be create or update') end

local ok, body = pcall(cjson.decode, text ~= '' and text or '{}')
if not ok or type(body) ~= 'table' then apimon_err('bad_request', 'body: not a JSON object') end
local allowed = {}
for _, f in ipairs(spec.list) do allowed[f] = true end
local set = {}
for k, v in pairs(body) do
  if k == spec.idf then
    if v ~= id then apimon_err('bad_request', k .. ': cannot be changed') end
  elseif k == 'createdAt' or k == 'lastModifiedAt' or k == spec.ro then
    -- read-only; ignored so a fetched record can be sent back
  elseif k == 'attributes' then
    set.attributes = apimon_attributes(v, 'attributes')
  elseif k == 'status' then
    if v ~= 'active' and v ~= 'inactive' then apimon_err('bad_request', 'status: must be active or inactive') end
    set.status = v
  elseif NOT_KEPT[k] then
    apimon_err('bad_request', k .. ': not supported (an Apigee field apimon does not keep)')
  elseif not allowed[k] then
    apimon_err('bad_request', tostring(k) .. ': unknown field')
  elseif v == cjson.null then
    set[k] = ''
  elseif type(v) ~= 'string' or #v > 256 then
    apimon_err('bad_request', k .. ': must be a string of at most 256 characters')
  else
    set[k] = v
  end
end

local key = 'apimon:' .. kind .. ':' .. id
local before = hash_table(redis.call('HGETALL', key))
local exists = before[spec.idf] ~= nil
if mode == 'create' and exists then apimon_err('conflict', kind .. ' ' .. id .. ' already exists') end
if mode == 'update' and not exists then apimon_err('not_found', 'no such ' .. kind .. ' ' .. id) end
if mode == 'update' then apimon_if_match(before, cond, kind) end

if mode == 'create' then
  redis.call('HSET', key, spec.idf, id, 'createdAt', fmt(now), 'status', 'active', 'attributes', '[]')
  for _, f in ipairs(spec.list) do redis.call('HSET', key, f, '') end
  redis.call('ZADD', 'apimon:' .. kind .. 's', 0, id)
end
for k, v in pairs(set) do redis.call('HSET', key, k, v) end
redis.call('HSET', key, 'lastModifiedAt', fmt(now))
redis.call('HINCRBY', key, 'ver', 1)
local after = hash_table(redis.call('HGETALL', key))
apimon_audit(m.who, m.addr, now, kind .. '.' .. mode, id, exists and before or nil, after)
return cjson.encode(after)
end)
