-- owner_list: one page of developers or app groups, in name order
-- (management API reads).  ARGV: 1-5 apimon_mgmt_args (the owner kind:
-- developer|appgroup; no owner), 6 first name to return ("" = from the
-- start), 7 count (1..1000).
-- Reply: array; 1 the name that starts the next page ("" = last page), then
-- one JSON record per owner.
return apimon_run(function()
local m, start, n = apimon_mgmt_args()
local kind = m.kind
start = start or ''
local count = apimon_page_args(kind, n)
local min = start == '' and '-' or '[' .. start
local names = redis.call('ZRANGEBYLEX', 'apimon:' .. kind .. 's', min, '+', 'LIMIT', 0, count + 1)
local out = { '' }
for i, name in ipairs(names) do
  if i > count then
    out[1] = name
    break
  end
  out[#out + 1] = cjson.encode(hash_table(redis.call('HGETALL', 'apimon:' .. kind .. ':' .. name)))
end
return out
end)
