-- customer_set: record the billing customer id of a developer or app group.
return apimon_run(function()
apimon_schema_check()
local kind, id, cus = ARGV[1], ARGV[2], ARGV[3] or ''
local now = apimon_now(ARGV[4])
if kind ~= 'developer' and kind ~= 'appgroup' then apimon_err('bad_request', 'kind must be developer or appgroup') end
if not valid_owner(kind, id) then apimon_err('not_found', 'no such ' .. kind .. ' ' .. tostring(id)) end
if #cus > 255 or cus:match('[%s%c]') then apimon_err('bad_request', 'customer: not a customer id') end
local key = 'apimon:' .. kind .. ':' .. (id or '')
local before = hash_table(redis.call('HGETALL', key))
if next(before) == nil then apimon_err('not_found', 'no such ' .. kind .. ' ' .. tostring(id)) end
redis.call('HSET', key, 'customer', cus, 'lastModifiedAt', fmt(now))
redis.call('HINCRBY', key, 'ver', 1)
local after = hash_table(redis.call('HGETALL', key))
apimon_audit(ARGV[5], ARGV[6], now, kind .. '.customer', id, before, after)
return cjson.encode(after)
end)
