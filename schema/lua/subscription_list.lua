-- subscription_list: one page of an owner's subscriptions, oldest first
-- (management API reads).  ARGV: 1-5 apimon_mgmt_args, 6 first
-- subscription id to return ("" = from the start), 7 count (1..1000).
-- Reply: array; 1 the id that starts the next page ("" = last page), then
-- one JSON subscription (without key digests) per subscription.
return apimon_run(function()
local m, start, n = apimon_mgmt_args()
local kind, owner = m.kind, m.owner
start = start or ''
local count = apimon_page_args(kind, n)
local base = 'apimon:' .. kind .. ':' .. owner
if redis.call('EXISTS', base) == 0 then apimon_err('not_found', 'no such ' .. kind .. ' ' .. owner) end
local first = 0
if start ~= '' then
  first = redis.call('ZRANK', base .. ':subs', start)
  if not first then apimon_err('bad_request', 'startKey: no subscription ' .. start .. ' for this ' .. kind) end
end
local ids = redis.call('ZRANGE', base .. ':subs', first, first + count)
local out = { '' }
for i, id in ipairs(ids) do
  if i > count then
    out[1] = id
    break
  end
  out[#out + 1] = cjson.encode(sub_public(hash_table(redis.call('HGETALL', 'apimon:sub:{' .. id .. '}'))))
end
return out
end)
