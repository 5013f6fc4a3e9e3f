-- owner_list: one page of developers or app groups, in name order
-- (management API reads).  ARGV: 1 kind (developer|appgroup), 2 first name
-- to return ("" = from the start), 3 count (1..1000).
-- Reply: array; 1 the name that starts the next page ("" = last page), then
-- one JSON record per owner.
return apimon_run(function()
local kind, start = ARGV[1], ARGV[2] or ''
local count = apimon_page_args(kind, ARGV[3])
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
