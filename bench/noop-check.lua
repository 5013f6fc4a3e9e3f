-- check, the bench's stand-in that does nothing (bench/check-module.sh
-- builds a module with it in place of schema/lua/check.lua): no read, no
-- write, every request allowed. What is left is what any design asking
-- Redis per request pays: the round trip, the call, core.lua's prelude and
-- a reply the module parses as usual. The reply has the shape of the real
-- one for bench/module.pl's plan (rate 1000000/s, quota 1000000000 a month)
-- and the location's own windows, so nginx builds the same headers.
local n, nloc = #KEYS, tonumber(ARGV[2]) or 0
local tail = {}
for j = 1, nloc do
  local a = CHECK_HEAD_ARGS + CHECK_LOC_ARGS * (j - 1) + 1
  tail[j] = '|bench-gold|bench|0|plan-rate|1000000|1|999999|1|plan-quota|1000000000|2592000|999999999|2592000'
    .. '|loc-rate|' .. ARGV[a + 1] .. '|' .. ARGV[a + 2] .. '|999999|1'
    .. '|loc-quota|' .. ARGV[a + 3] .. '|86400|999999999|86400'
end
local rbase = CHECK_HEAD_ARGS + CHECK_LOC_ARGS * nloc
local reply = {}
for i = 1, n do
  reply[i] = 'allowed|' .. KEYS[i]:sub(13, -2) .. tail[tonumber(ARGV[rbase + CHECK_REQ_ARGS * i])]
end
return reply
