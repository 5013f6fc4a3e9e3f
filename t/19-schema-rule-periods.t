#!/usr/bin/perl
# calendar.lua's rule_period (the prelude of check): the periods of a rule of
# N units anchored at the subscription's start, through real Redis: Software
# AG's own examples, year end, leap day, week start Monday/Sunday/Wednesday,
# seconds to days with N > 1, and properties over random instants.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;

my $r = Apimon::Redis->start;
*ms = \&Apimon::Redis::ms_utc;
my $DAY = 86400000;
my $pre = Apimon::Redis::calendar_text();
sub lua { my ($code, @argv) = @_; $r->cmd('EVAL', $pre . $code, 0, @argv) }

my $one = 'local s, e, st = rule_period(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), '
        . 'tonumber(ARGV[5])) return { fmt(s), fmt(e), st }';
sub period { my ($unit, $n, $anchor, $now, $ws) = @_; lua($one, $unit, $n, $anchor, $now, $ws // 0) }

# unit, N, anchor, now, week start (0 Monday .. 6 Sunday), start, end, stamp
my @cases = (
    # Software AG: from a Wednesday, 2 calendar weeks end after 12 days
    [ 'week', 2, '2026-12-02T10:00', '2026-12-05', 0, '2026-12-02T10:00', '2026-12-14', '20261130' ],
    [ 'week', 2, '2026-12-02T10:00', '2026-12-13T23:59:59.999', 0, '2026-12-02T10:00', '2026-12-14', '20261130' ],
    [ 'week', 2, '2026-12-02T10:00', '2026-12-14', 0, '2026-12-14', '2026-12-28', '20261214' ],
    # weeks across the year end
    [ 'week', 2, '2026-12-30T08:00', '2027-01-05', 0, '2026-12-30T08:00', '2027-01-11', '20261228' ],
    [ 'week', 2, '2026-12-30T08:00', '2027-01-11', 0, '2027-01-11', '2027-01-25', '20270111' ],
    # the week starting on Sunday
    [ 'week', 2, '2026-12-02T10:00', '2026-12-12', 6, '2026-12-02T10:00', '2026-12-13', '20261129' ],
    [ 'week', 2, '2026-12-02T10:00', '2026-12-13', 6, '2026-12-13', '2026-12-27', '20261213' ],
    [ 'week', 1, '2027-01-03T09:00', '2027-01-03T10:00', 6, '2027-01-03T09:00', '2027-01-10', '20270103' ],
    [ 'week', 1, '2027-01-03T09:00', '2027-01-03T10:00', 0, '2027-01-03T09:00', '2027-01-04', '20261228' ],
    [ 'week', 1, '2027-01-03T09:00', '2027-01-04', 0, '2027-01-04', '2027-01-11', '20270104' ],
    # Wednesday, from a leap day (Tuesday)
    [ 'week', 1, '2028-02-29T12:00', '2028-02-29T13:00', 2, '2028-02-29T12:00', '2028-03-01', '20280223' ],
    [ 'week', 1, '2028-02-29T12:00', '2028-03-01', 2, '2028-03-01', '2028-03-08', '20280301' ],
    # Software AG: August with 2 calendar months ends at the end of September
    [ 'month', 2, '2026-08-10T12:00', '2026-09-30T23:59:59.999', 0, '2026-08-10T12:00', '2026-10-01', '202608' ],
    [ 'month', 2, '2026-08-10T12:00', '2026-10-01', 0, '2026-10-01', '2026-12-01', '202610' ],
    [ 'month', 2, '2026-08-10T12:00', '2027-01-31T23:59', 0, '2026-12-01', '2027-02-01', '202612' ],
    # months through a leap February
    [ 'month', 3, '2027-12-29', '2028-02-29T23:59:59.999', 0, '2027-12-29', '2028-03-01', '202712' ],
    [ 'month', 3, '2027-12-29', '2028-03-01', 0, '2028-03-01', '2028-06-01', '202803' ],
    [ 'month', 12, '2028-02-29T06:00', '2029-01-31', 0, '2028-02-29T06:00', '2029-02-01', '202802' ],
    [ 'month', 12, '2028-02-29T06:00', '2029-02-28', 0, '2029-02-01', '2030-02-01', '202902' ],
    [ 'month', 1, '2026-08-10', '2027-02-14', 0, '2027-02-01', '2027-03-01', '202702' ],
    # days, hours, minutes, seconds with N > 1
    [ 'day', 3, '2028-02-27T15:00', '2028-02-29T23:00', 0, '2028-02-27T15:00', '2028-03-01', '20280227' ],
    [ 'day', 3, '2028-02-27T15:00', '2028-03-01', 0, '2028-03-01', '2028-03-04', '20280301' ],
    [ 'day', 3, '2026-12-30T06:00', '2027-01-02T05:00', 0, '2027-01-02', '2027-01-05', '20270102' ],
    [ 'day', 1, '0', '2027-01-05T10:00', 0, '2027-01-05', '2027-01-06', '20270105' ],
    [ 'hour', 6, '2026-12-31T20:30', '2026-12-31T23:00', 0, '2026-12-31T20:30', '2027-01-01T02:00', '2026123120' ],
    [ 'hour', 6, '2026-12-31T20:30', '2027-01-01T02:00', 0, '2027-01-01T02:00', '2027-01-01T08:00', '2027010102' ],
    [ 'minute', 15, '2027-03-14T10:07:30', '2027-03-14T10:21:59.999', 0, '2027-03-14T10:07:30', '2027-03-14T10:22', '202703141007' ],
    [ 'minute', 15, '2027-03-14T10:07:30', '2027-03-14T10:22', 0, '2027-03-14T10:22', '2027-03-14T10:37', '202703141022' ],
    [ 'second', 10, '2028-02-29T23:59:55.500', '2028-03-01T00:00:04.999', 0, '2028-02-29T23:59:55.500', '2028-03-01T00:00:05', '20280229235955' ],
    [ 'second', 10, '2028-02-29T23:59:55.500', '2028-03-01T00:00:05', 0, '2028-03-01T00:00:05', '2028-03-01T00:00:15', '20280301000005' ],
    # before the start: the first period
    [ 'month', 2, '2026-08-10', '2026-07-01', 0, '2026-08-10', '2026-10-01', '202608' ],
    [ 'hour', 2, '2026-08-10T05:00', '2026-08-10T01:00', 0, '2026-08-10T05:00', '2026-08-10T07:00', '2026081005' ],
);
for my $c (@cases) {
    my ($unit, $n, $anchor, $now, $ws, @want) = @$c;
    my $a = $anchor eq '0' ? 0 : ms($anchor);
    is_deeply(period($unit, $n, $a, ms($now), $ws), [ ms($want[0]), ms($want[1]), $want[2] ],
              "$n $unit from $anchor (week start $ws) at $now: $want[0] .. $want[1] ($want[2])");
}
my $sag = period('week', 2, ms('2026-12-02T10:00'), ms('2026-12-05'), 0);
is(($sag->[1] - ms('2026-12-02')) / $DAY, 12, 'Software AG: two calendar weeks from a Wednesday are 12 days');

# (inside apimon_run, as every script: a bare error({...}) table kills Redis 7.0)
like($r->try_cmd('EVAL', $pre . 'return apimon_run(function() ' . $one . ' end)', 0, 'year', 1, 0, 0, 0), qr/ERR apimon bad_request: bad period unit: year/,
     'an unknown unit: a clean error');

# properties over random instants: now is inside its period, periods follow
# each other without a gap, later periods are exactly N units, N = 1 is
# core.lua's calendar period (Monday weeks) after the first
my $prop = <<'LUA';
local bad, n_cases = {}, 0
local units = { 'second', 'minute', 'hour', 'day', 'week', 'month' }
local len = { second = 1000, minute = 60000, hour = 3600000, day = DAY_MS, week = 7 * DAY_MS }
math.randomseed(tonumber(ARGV[1]))
for i = 1, 3000 do
  local unit = units[(i % 6) + 1]
  local n = ({ 1, 1, 2, 3, 7, 12 })[math.random(6)]
  local ws = math.random(0, 6)
  -- math.random(m, n) takes C ints only: scale its float instead
  local anchor = floor(math.random() * 4102444800) * 1000 + math.random(0, 999)
  local span = (len[unit] or 31 * DAY_MS) * n * 40
  local now = anchor + floor(math.random() * span)
  local s, e, st = rule_period(unit, n, anchor, now, ws)
  n_cases = n_cases + 1
  local s2 = rule_period(unit, n, anchor, e, ws)
  if not (s <= now and now < e) then bad[#bad + 1] = 'outside ' .. unit .. ' ' .. fmt(anchor) .. ' ' .. fmt(now) end
  if s2 ~= e then bad[#bad + 1] = 'gap ' .. unit .. ' ' .. fmt(anchor) .. ' ' .. fmt(now) end
  if s ~= anchor and len[unit] and e - s ~= n * len[unit] then bad[#bad + 1] = 'length ' .. unit end
  if n == 1 and unit ~= 'second' and s ~= anchor then
    local cs, ce, cst = period(unit, now)
    local ok = unit == 'week' and ws ~= 0 or (cs == s and ce == e and cst == st)
    if not ok then bad[#bad + 1] = 'calendar ' .. unit .. ' ' .. fmt(now) end
  end
end
return { n_cases, #bad, bad[1] or '' }
LUA
my $res = lua($prop, 11);
is($res->[1], 0, "$res->[0] random rules: inside, contiguous, N units long, N = 1 is the calendar period")
    or diag($res->[2]);

done_testing;
