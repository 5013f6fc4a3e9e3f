#!/usr/bin/perl
# UTC calendar periods: lib.lua's calendar math against Perl's gmtime, and
# quota roll-over through the check script at crafted instants.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Apimon::Redis;

my $r = Apimon::Redis->start;
*ms = \&Apimon::Redis::ms_utc;
my $DAY = 86400000;

# --- core.lua + lib.lua alone: run a snippet after them
my $lib = Apimon::Redis::lib_text();
sub lua { my ($code, @argv) = @_; $r->cmd('EVAL', $lib . $code, 0, @argv) }

# every day from 1600 to 2500: round trip and succession
my $bad = lua(<<'LUA');
local errs = 0
local z0, z1 = days_from_civil(1600, 1, 1), days_from_civil(2500, 12, 31)
local py, pm, pd = civil_from_days(z0 - 1)
for z = z0, z1 do
  local y, m, d = civil_from_days(z)
  if days_from_civil(y, m, d) ~= z then errs = errs + 1 end
  local ok = (y == py and m == pm and d == pd + 1) or (y == py and m == pm + 1 and d == 1)
          or (y == py + 1 and m == 1 and pm == 12 and d == 1)
  if not ok then errs = errs + 1 end
  py, pm, pd = y, m, d
end
return { errs, z1 - z0 + 1 }
LUA
is($bad->[0], 0, "civil <-> days round trip and succession over $bad->[1] days");
is(lua('return days_from_civil(1970, 1, 1)'), 0, 'epoch is day 0');
is(lua('return days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 1)'), 29, '2000 is a leap year (400 rule)');
is(lua('return days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 1)'), 28, '2100 is not (100 rule)');
is(lua('return days_from_civil(2028, 3, 1) - days_from_civil(2028, 2, 1)'), 29, '2028 is a leap year');
is(lua('return days_from_civil(2027, 3, 1) - days_from_civil(2027, 2, 1)'), 28, '2027 is not');
is_deeply(lua('return { civil_from_days(-1) }'), [ 1969, 12, 31 ], 'day -1');

# period() against Perl for random instants, every unit
sub expect_period {
    my ($unit, $t) = @_;
    my $sec = int($t / 1000);
    my @g = gmtime($sec);
    my ($y, $mo, $d, $h, $mi, $wd) = ($g[5] + 1900, $g[4] + 1, $g[3], $g[2], $g[1], $g[6]);
    my $midnight = ($sec - $sec % 86400) * 1000;
    if ($unit eq 'minute') { my $s = $t - $t % 60000; return ($s, $s + 60000, sprintf('%04d%02d%02d%02d%02d', $y, $mo, $d, $h, $mi)) }
    if ($unit eq 'hour')   { my $s = $t - $t % 3600000; return ($s, $s + 3600000, sprintf('%04d%02d%02d%02d', $y, $mo, $d, $h)) }
    if ($unit eq 'day')    { return ($midnight, $midnight + $DAY, sprintf('%04d%02d%02d', $y, $mo, $d)) }
    if ($unit eq 'week') {
        my $s = $midnight - (($wd + 6) % 7) * $DAY;
        my @m = gmtime($s / 1000);
        return ($s, $s + 7 * $DAY, sprintf('%04d%02d%02d', $m[5] + 1900, $m[4] + 1, $m[3]));
    }
    my $s = ms(sprintf '%04d-%02d-01', $y, $mo);
    my $e = $mo == 12 ? ms(sprintf '%04d-01-01', $y + 1) : ms(sprintf '%04d-%02d-01', $y, $mo + 1);
    return ($s, $e, sprintf('%04d%02d', $y, $mo));
}
srand(7);
my @times = (0, ms('2028-02-29T23:59:59.999'), ms('2028-03-01'), ms('2026-12-31T23:59:59.999'),
             ms('2027-01-01'), ms('2100-02-28T12:00'), ms('2000-02-29'), ms('2027-03-15'), ms('2027-03-14T23:59:59.999'));
push @times, int(rand(4_102_444_800_000)) for 1 .. 300;    # up to 2100
my $snippet = 'local out = {} for i = 2, #ARGV do local s, e, st = period(ARGV[1], tonumber(ARGV[i])) '
            . 'out[#out + 1] = fmt(s) .. " " .. fmt(e) .. " " .. st end return out';
for my $unit (qw(minute hour day week month)) {
    my $got = lua($snippet, $unit, @times);
    my @want = map { join ' ', expect_period($unit, $_) } @times;
    my @diff = grep { $got->[$_] ne $want[$_] } 0 .. $#times;
    is(scalar @diff, 0, "period($unit) matches gmtime for " . scalar(@times) . ' instants')
        or diag("t=$times[$diff[0]] got $got->[$diff[0]] want $want[$diff[0]]");
}
is(lua('return ymd(ARGV[1])', ms('2028-02-29T23:59:59.999')), '20280229', 'ymd');

# --- quota roll-over through check
my %units = map { ($_ => { quota => { limit => 2, period => $_ } }) } qw(minute hour day week month);
$r->apply_catalog(JSON::PP->new->canonical->encode({
    products => [ { name => 'p', apis => [ 'a' ] } ],
    plans => [ map { { name => "q-$_", product => 'p', pricing => { model => 'free' }, %{ $units{$_} } } } sort keys %units ],
}));
$r->put_developer('dev@example.com', {});
sub buy { $r->create_subscription(owner => 'dev@example.com', product => 'p', plan => "q-$_[0]", now => ms('2026-12-01')) }
sub chk { $r->check(key => $_[0]{primary}, api => 'a', now => $_[1]) }

# Spend the quota just before `$next`, see it refused until `$next`, allowed at it.
sub rolls {
    my ($unit, $before, $next, $stamp1, $stamp2, $len_days) = @_;
    my ($t1, $t2) = (ms($before), ms($next));
    my $s = buy($unit);
    my $c = chk($s, $t1);
    is($c->{result}, 'allowed', "$unit $before: allowed");
    is($c->{windows}[0]{window}, $len_days * 86400, "$unit $before: period of $len_days days") if $len_days;
    chk($s, $t1);
    $c = chk($s, $t1);
    is($c->{result}, 'quota_exceeded', "$unit $before: third call refused");
    is($c->{retry_after}, int(($t2 - $t1 + 999) / 1000), "$unit $before: retry-after up to $next");
    is($r->quota_count($s->{key}, 'plan', $stamp1), 2, "$unit: counter stamped $stamp1");
    $c = chk($s, $t2);
    is($c->{result}, 'allowed', "$unit $next: new period, allowed");
    is($c->{windows}[0]{remaining}, 1, "$unit $next: fresh count");
    is($r->quota_count($s->{key}, 'plan', $stamp2), 1, "$unit: counter stamped $stamp2");
    # the closed period stays readable for billing: archived to its stamped key
    is($r->cmd('GET', "$s->{key}:quota:plan:$stamp1"), 2, "$unit: $stamp1 archived at the roll-over");
    is($r->cmd('PEXPIRETIME', "$s->{key}:quota:plan:$stamp1"), $t1 + 1 + 62 * $DAY,
       "$unit: archive expires 62 days after the period");
    return $s;
}

rolls('month', '2028-02-29T23:59:59.999', '2028-03-01', '202802', '202803', 29);
rolls('month', '2027-02-28T23:59:59.999', '2027-03-01', '202702', '202703', 28);
rolls('month', '2027-04-30T23:59:59.999', '2027-05-01', '202704', '202705', 30);
rolls('month', '2027-01-31T23:59:59.999', '2027-02-01', '202701', '202702', 31);
rolls('month', '2026-12-31T23:59:59.999', '2027-01-01', '202612', '202701', 31);
rolls('day', '2028-02-28T23:59:59.999', '2028-02-29', '20280228', '20280229', 1);
rolls('day', '2028-02-29T23:59:59.999', '2028-03-01', '20280229', '20280301', 1);
rolls('day', '2026-12-31T23:59:59.999', '2027-01-01', '20261231', '20270101', 1);
rolls('hour', '2026-12-31T23:59:59.999', '2027-01-01', '2026123123', '2027010100');
rolls('minute', '2026-12-31T23:59:59.999', '2027-01-01', '202612312359', '202701010000');
rolls('minute', '2027-03-10T12:34:59.999', '2027-03-10T12:35:00', '202703101234', '202703101235');

# weeks: Monday 00:00 UTC. 2027-03-14 is a Sunday, 2027-03-15 a Monday.
my $w = rolls('week', '2027-03-14T23:59:59.999', '2027-03-15', '20270308', '20270315', 7);
my $w2 = buy('week');
chk($w2, ms('2027-03-13T10:00')) for 1 .. 2;    # Saturday
is(chk($w2, ms('2027-03-14'))->{result}, 'quota_exceeded', 'week: Sunday 00:00 does not roll');
is(chk($w2, ms('2027-03-14T23:00'))->{result}, 'quota_exceeded', 'week: Sunday evening still the same week');
is(chk($w2, ms('2027-03-15'))->{result}, 'allowed', 'week: Monday 00:00 rolls');
# a week across the year end is stamped with its Monday (2026-12-28)
my $w3 = buy('week');
chk($w3, ms('2026-12-31T23:59:59.999'));
chk($w3, ms('2027-01-01'));
is($r->quota_count($w3->{key}, 'plan', '20261228'), 2, 'week spanning the new year: one counter, Monday stamp');
is(chk($w3, ms('2027-01-03T23:59:59.999'))->{result}, 'quota_exceeded', 'still that week on Sunday 2027-01-03');
is(chk($w3, ms('2027-01-04'))->{result}, 'allowed', 'rolls on Monday 2027-01-04');

# --- subscription_view quota numbers
my $v = buy('month');
chk($v, ms('2028-02-10'));
my $view = $r->view_subscription($v->{id}, now => ms('2028-02-29T23:59:59.999'));
is_deeply($view->{quota}, {
    limit => '2', used => '1', remaining => '1',
    periodStart => '' . ms('2028-02-01'), periodEnd => '' . ms('2028-03-01'), remainingMs => '1',
}, 'view: quota of the leap-year February as decimal strings');
$view = $r->view_subscription($v->{id}, now => ms('2028-03-01'));
is_deeply([ @{ $view->{quota} }{qw(used remaining periodStart)} ], [ '0', '2', '' . ms('2028-03-01') ], 'view: March is fresh');
my $raw = $r->run_script('subscription_view', [ $v->{key} ], [ Apimon::Redis::mgmt_args(now => ms('2028-02-29T23:59:59.999')) ]);
like($raw, qr/"periodEnd":"1835481600000"/, 'view JSON: times are strings, no exponent');

done_testing;
