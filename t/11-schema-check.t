#!/usr/bin/perl
# The check script: every result, GCRA burst and spacing, quota, location
# windows, counters untouched on refusal, usage fields, expiries, and plan
# changes taking effect at once without resetting counters.
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

sub catalog {
    my (%over) = @_;    # plan name => replacement limits
    my %plans = (
        none => {},
        man  => { approval => 'manual' },
        r5   => { rateLimit => { limit => 5, per => 'second' } },
        r3   => { rateLimit => { limit => 3, per => 'second' } },
        fast => { rateLimit => { limit => 5000, per => 'second' } },
        slow => { rateLimit => { limit => 3, per => 'hour' } },
        q3   => { quota => { limit => 3, period => 'day' } },
        rq   => { rateLimit => { limit => 2, per => 'second' }, quota => { limit => 2, period => 'day' } },
        lim  => { rateLimit => { limit => 100, per => 'second' }, quota => { limit => 10, period => 'month' } },
        %over,
    );
    my %apis = (p => [ 'a', 'b' ], q => [ 'c' ], %{ $over{_apis} || {} });
    delete $plans{_apis};
    return JSON::PP->new->canonical->encode({
        products => [ map { { name => $_, apis => $apis{$_} } } sort keys %apis ],
        plans => [ map { { name => $_, product => 'p', pricing => { model => 'free' }, %{ $plans{$_} } } }
                   sort keys %plans ],
    });
}

is($r->apply_catalog(catalog()), 1, 'catalog applied');
$r->put_developer('dev@example.com', {});
sub buy { $r->create_subscription(owner => 'dev@example.com', product => 'p', plan => $_[0], now => $_[1] // ms('2027-03-01'), @_[2 .. $#_]) }
sub chk { my ($s, $now, %o) = @_; $r->check(key => $s->{primary}, api => 'a', now => $now, %o) }
sub res { chk(@_)->{result} }
sub usage { my ($s, $ym) = @_; my $l = $r->cmd('HGETALL', "$s->{key}:usage:$ym"); return { @$l } }

my $T0 = ms('2027-03-10T12:00:00');    # a Wednesday

# --- invalid_key: nothing identified, nothing counted
my $s = buy('none');
my $ghost = Apimon::Redis::new_uuid();
my $c = $r->check(key => Apimon::Redis::new_key($ghost), api => 'a', now => $T0);
is_deeply($c->{raw}, [ 'invalid_key', '', '', '', 0, 0 ], 'unknown subscription: invalid_key');
$c = $r->check(key => Apimon::Redis::new_key($s->{id}), api => 'a', now => $T0);
is_deeply($c->{raw}, [ 'invalid_key', '', '', '', 0, 0 ], 'wrong key for a real subscription: invalid_key');
is_deeply($r->run_script('check', [ $s->{key} ], [ $T0, 1, 'a', 0, 0, 0, '', 'loc', '', 1 ]),
          [ 'invalid_key||||0' ], 'empty digest never matches');
is_deeply(usage($s, '202703'), {}, 'invalid_key is not counted');

# --- allowed without windows; both keys work
$c = chk($s, $T0);
is_deeply($c->{raw}, [ 'allowed', $s->{id}, 'none', 'p', 0, 0 ], 'allowed, no windows');
is($r->check(key => $s->{secondary}, api => 'b', now => $T0)->{result}, 'allowed', 'secondary key, api b');

# --- not_entitled
$c = $r->check(key => $s->{primary}, api => 'c', now => $T0);
is_deeply($c->{raw}, [ 'not_entitled', $s->{id}, 'none', 'p', 0, 0 ], 'api of another product: not_entitled');
is(res($s, $T0, api => 'x.y'), 'not_entitled', 'unknown api: not_entitled');
is_deeply(usage($s, '202703'),
    { '20270310|a|ok' => 1, '20270310|b|ok' => 1, '20270310|c|not_entitled' => 1, '20270310|x.y|not_entitled' => 1 },
    'usage: ok and not_entitled fields');

# --- inactive: submitted, before start, at/after end, suspended
my $m = buy('man');
is($m->{reply}{state}, 'submitted', 'manual plan starts submitted');
is_deeply(chk($m, $T0)->{raw}, [ 'inactive', $m->{id}, 'man', 'p', 0, 0 ], 'submitted: inactive');
$r->set_state($m->{id}, 'activate', now => $T0);
is(res($m, $T0), 'allowed', 'activated: allowed');
my $late = buy('none', $T0, start => $T0 + 1000);
is(res($late, $T0 + 999), 'inactive', 'before startTime: inactive');
is(res($late, $T0 + 1000), 'allowed', 'at startTime: allowed');
# a field written behind the scripts' back: dropping the "pol" mirror makes check rebuild it
$r->cmd('HSET', $late->{key}, 'endTime', $T0 + 5000);
$r->cmd('HDEL', $late->{key}, 'pol');
is(res($late, $T0 + 4999), 'allowed', 'before endTime: allowed');
is(res($late, $T0 + 5000), 'inactive', 'at endTime: inactive');
$r->set_state($m->{id}, 'suspend', now => $T0);
is(res($m, $T0), 'inactive', 'suspended: inactive');
$r->set_state($m->{id}, 'resume', now => $T0);
is(res($m, $T0), 'allowed', 'resumed: allowed');
$r->set_state($m->{id}, 'cancel', now => $T0 + 10);
is(res($m, $T0 + 5), 'inactive', 'cancelled: inactive even before its endTime');
is_deeply(usage($m, '202703'), { '20270310|a|inactive' => 3, '20270310|a|ok' => 2 }, 'usage: inactive counted');

# --- GCRA: burst of 5 then spacing of 200 ms
my $g = buy('r5');
for my $i (1 .. 5) {
    $c = chk($g, $T0);
    is($c->{result}, 'allowed', "burst call $i allowed");
    is_deeply($c->{windows}, [ { name => 'plan-rate', limit => 5, window => 1, remaining => 5 - $i, reset => 1 } ],
              "burst call $i: remaining " . (5 - $i));
}
my $tat = $r->rate_tat($g->{key}, 'plan');
is($tat, ($T0 + 1000) * 1000, 'TAT stored in microseconds');
$c = chk($g, $T0);
is($c->{result}, 'rate_limited', '6th call in the same instant: rate_limited');
is($c->{retry_after}, 1, 'retry-after at least 1 s');
is($c->{windows}[0]{remaining}, 0, 'remaining 0');
is($r->rate_tat($g->{key}, 'plan'), $tat, 'refusal leaves the TAT alone');
is(res($g, $T0 + 199), 'rate_limited', 'before one interval: refused');
is(res($g, $T0 + 200), 'allowed', 'after one interval (200 ms): one more');
is(res($g, $T0 + 200), 'rate_limited', '...and only one');
is(res($g, $T0 + 400), 'allowed', 'next interval');
my @ok = grep { res($g, $T0 + 2400) eq 'allowed' } 1 .. 7;
is(scalar @ok, 5, 'idle for a full window: full burst again');
is($r->rate_tat($g->{key}, 'plan'), ($T0 + 3400) * 1000, 'TAT after the second burst');
is($r->cmd('EXISTS', "$g->{key}:rate:plan"), 0, 'no separate rate key: the state is in the hash');

# above 1000/s the interval is below a millisecond: 5000/s must stay
# 5000/s once the burst is spent, not fall to one call per ms
my $gf = buy('fast');
is(scalar(grep { res($gf, $T0) eq 'allowed' } 1 .. 5001), 5000, '5000/second: burst of 5000');
is(scalar(grep { res($gf, $T0 + 100) eq 'allowed' } 1 .. 600), 500, '100 ms later: 500 more (one per 200 us)');
is(scalar(grep { res($gf, $T0 + 101) eq 'allowed' } 1 .. 10), 5, '1 ms later: 5 more');

# emission interval rounds up: 3 per second -> 334 ms
my $g3 = buy('r3');
is(scalar(grep { res($g3, $T0) eq 'allowed' } 1 .. 4), 3, '3/second: burst of 3');
is(res($g3, $T0 + 333), 'rate_limited', '333 ms later: still refused');
is(res($g3, $T0 + 334), 'allowed', '334 ms later: allowed');

# long windows: 3 per hour
my $sl = buy('slow');
chk($sl, $T0) for 1 .. 3;
$c = chk($sl, $T0);
is($c->{result}, 'rate_limited', '3/hour: 4th refused');
is($c->{retry_after}, 1200, 'retry after one interval (1200 s)');
is($c->{windows}[0]{reset}, 3600, 'reset: until the full limit is back');
is(res($sl, $T0 + 1200 * 1000), 'allowed', 'one more after 20 minutes');

# Random arrivals: GCRA with burst N and interval T accepts at most
# N + floor(L / T) calls in any interval of length L (the whole guarantee),
# and never refuses a call the spacing allows.
srand(42);
for my $plan ([ 'r3', 3, 1 ], [ 'slow', 3, 3600 ]) {
    my ($name, $n, $w) = @$plan;
    my $iv = int(($w * 1000000 + $n - 1) / $n);    # microseconds, as the script
    my $x = buy($name);
    my ($t, @acc, $wrong) = ($T0);
    my $tat = $T0 * 1000;
    for (1 .. 400) {
        $t += int(rand($iv * 1.5 / 1000));     # calls come at whole ms
        my $got = res($x, $t);
        # reference GCRA in Perl
        my $tu = $t * 1000;
        my $base = $tat > $tu ? $tat : $tu;
        my $want = $base + $iv - $tu <= $n * $iv ? 'allowed' : 'rate_limited';
        $tat = $base + $iv if $want eq 'allowed';
        $wrong++ if $got ne $want;
        push @acc, $t if $got eq 'allowed';
    }
    is($wrong // 0, 0, "$name: decisions match a reference GCRA (" . scalar(@acc) . ' accepted of 400)');
    my $viol = 0;
    for my $i (0 .. $#acc) {
        for my $j ($i + 1 .. $#acc) {
            $viol++ if $j - $i + 1 > $n + int(($acc[$j] - $acc[$i]) * 1000 / $iv);
        }
    }
    is($viol, 0, "$name: at most N + L/T calls in any interval L");
}

# --- quota: 3 per day
my $q = buy('q3');
my $end = ms('2027-03-11');
for my $i (1 .. 3) {
    $c = chk($q, $T0);
    is_deeply($c->{windows}, [ { name => 'plan-quota', limit => 3, window => 86400, remaining => 3 - $i,
                                 reset => ($end - $T0) / 1000 } ], "quota call $i");
}
$c = chk($q, $T0 + 1);
is($c->{result}, 'quota_exceeded', '4th call: quota_exceeded');
is($c->{retry_after}, int(($end - $T0 - 1 + 999) / 1000), 'retry-after = until the period ends');
is($r->quota_count($q->{key}, 'plan', '20270310'), 3, 'counter stays at the limit');
is(res($q, $end), 'allowed', 'next day: allowed');
is($r->cmd('GET', "$q->{key}:quota:plan:20270310"), 3, 'closed period archived to its stamped key');
is($r->cmd('PEXPIRETIME', "$q->{key}:quota:plan:20270310"), $end + 62 * $DAY, 'archived quota key expires 62 days after the period');
is_deeply(usage($q, '202703'), { '20270310|a|ok' => 3, '20270310|a|quota_exceeded' => 1, '20270311|a|ok' => 1 },
          'usage: per day, refusals by reason');
is($r->cmd('PEXPIRETIME', "$q->{key}:usage:202703"), ms('2027-04-01') + 400 * $DAY, 'usage expires 400 days after the month');

# --- both windows refuse: quota wins, retry-after is the largest
my $b = buy('rq');
chk($b, $T0) for 1 .. 2;
$c = chk($b, $T0);
is($c->{result}, 'quota_exceeded', 'rate and quota both refuse: quota_exceeded');
is($c->{retry_after}, ($end - $T0) / 1000, 'retry-after: the longer wait');
is_deeply([ map { $_->{name} } @{ $c->{windows} } ], [ 'plan-rate', 'plan-quota' ], 'windows listed in order');
my $b2 = buy('rq');
chk($b2, $T0);
chk($b2, $T0);
is(res($b2, ms('2027-03-11')), 'allowed', 'quota rolled over');
chk($b2, ms('2027-03-11'));
is(res($b2, ms('2027-03-11') + 10), 'quota_exceeded', 'quota refuses first');
my $b4 = buy('rq');
chk($b4, $T0) for 1 .. 2;
$r->cmd('HDEL', $b4->{key}, 'c:quota:plan');
$c = chk($b4, $T0);
is($c->{result}, 'rate_limited', 'only the rate refuses: rate_limited');

# --- location windows, and counters untouched when any window refuses
my $l = buy('r5');
my %loc = (loc_rate => [ 2, 60 ], loc_quota => [ 3, 'hour' ], scope => 'x1');
$c = chk($l, $T0, %loc);
is_deeply([ map { $_->{name} } @{ $c->{windows} } ], [ 'plan-rate', 'loc-rate', 'loc-quota' ], 'location windows reported');
is_deeply($c->{windows}[1], { name => 'loc-rate', limit => 2, window => 60, remaining => 1, reset => 30 }, 'loc-rate numbers');
is_deeply($c->{windows}[2], { name => 'loc-quota', limit => 3, window => 3600, remaining => 2, reset => 3600 }, 'loc-quota numbers');
is($r->quota_count($l->{key}, 'loc.x1', '2027031012'), 1, 'location quota: loc.<scope>, hour stamp');
ok(defined $r->rate_tat($l->{key}, 'loc.x1'), 'location rate: loc.<scope>');
chk($l, $T0 + 100, %loc);
my @state = ('c:rate:plan', 'c:rate:loc.x1', 'c:quota:loc.x1');
my $before = $r->cmd('HMGET', $l->{key}, @state);
is(scalar(grep { defined } @$before), 3, 'three window states stored');
$c = chk($l, $T0 + 200, %loc);
is($c->{result}, 'rate_limited', 'location rate refuses while the plan rate passes');
cmp_ok($c->{retry_after}, '>=', 29, 'retry-after ~ one location interval');
is_deeply($r->cmd('HMGET', $l->{key}, @state), $before,
          'no counter moved on refusal (plan rate, location rate, location quota)');
is(res($l, $T0 + 200, scope => 'other', loc_rate => [ 2, 60 ]), 'allowed', 'another scope has its own counters');
is(usage($l, '202703')->{'20270310|a|rate_limited'}, 1, 'rate_limited counted');

# --- plan limit changes apply at once, counters kept
my $p = buy('lim');
chk($p, $T0) for 1 .. 4;
is($r->quota_count($p->{key}, 'plan', '202703'), 4, '4 calls counted');
is($r->apply_catalog(catalog(lim => { rateLimit => { limit => 100, per => 'second' }, quota => { limit => 4, period => 'month' } })),
   2, 'lower the quota: version 2');
is($r->cmd('HGET', $p->{key}, 'quota_n'), 4, 'mirrored quota rewritten');
$c = chk($p, $T0 + 1000);
is($c->{result}, 'quota_exceeded', 'lowered quota refuses at once');
is($r->quota_count($p->{key}, 'plan', '202703'), 4, 'counter not reset');
$r->apply_catalog(catalog(lim => { rateLimit => { limit => 100, per => 'second' }, quota => { limit => 6, period => 'month' } }));
$c = chk($p, $T0 + 2000);
is($c->{result}, 'allowed', 'raised quota allows at once');
is($c->{windows}[1]{remaining}, 1, 'remaining counts the old calls (6 - 5)');
$r->apply_catalog(catalog(lim => { rateLimit => { limit => 1, per => 'minute' }, quota => { limit => 100, period => 'month' } }));
is(res($p, $T0 + 3000), 'allowed', 'rate 1/minute: the drained window allows one');
is(res($p, $T0 + 3001), 'rate_limited', 'and refuses the next at once');
$r->apply_catalog(catalog(_apis => { p => [ 'a' ] }));
is($r->check(key => $s->{primary}, api => 'b', now => $T0)->{result}, 'not_entitled', 'api removed from the product: not_entitled at once');
is($r->cmd('HGET', $s->{key}, 'apis'), ',a,', 'mirrored apis rewritten');
$r->apply_catalog(catalog(lim => {}));
is_deeply(chk($p, $T0 + 4000)->{raw}, [ 'allowed', $p->{id}, 'lim', 'p', 0, 0 ], 'limits removed: no windows');

# --- server clock when now = 0
my $z = buy('none', 0);
is($r->check(key => $z->{primary}, api => 'a', now => 0)->{result}, 'allowed', 'now = 0 uses Redis TIME');
my @t = gmtime(time);
my $ym = sprintf '%04d%02d', $t[5] + 1900, $t[4] + 1;
ok(scalar(grep { /\|a\|ok$/ } keys %{ usage($z, $ym) }), 'usage filed under the current month');

# bad now is a bad_request
my $err = $r->try_script('check', [ $z->{key} ], [ 'soon', 1, 'a', 0, 0, 0, '', '', Apimon::Redis::key_digest($z->{primary}), 1 ]);
like("$err", qr/^ERR apimon bad_request: /, 'bad now: bad_request');

# --- batches: one call decides several requests, in order, each on its own
my $bq = buy('q3');
my $bn = buy('none');
my $v = $r->check_batch([ map({ { key => $bq->{primary}, api => 'a' } } 1 .. 4),
                          { key => $bn->{primary}, api => 'a' },
                          { key => $bn->{primary}, api => 'a', loc_quota => [ 1, 'fortnight' ] },
                          { key => Apimon::Redis::new_key($bn->{id}), api => 'a' },
                          { key => $bn->{primary}, api => 'c' } ], $T0);
is_deeply([ map { $_->{result} // 'error' } @$v ],
          [ qw(allowed allowed allowed quota_exceeded allowed error invalid_key not_entitled) ],
          'batch: exactly the quota passes, later requests see earlier counts');
is_deeply([ map { $_->{windows}[0]{remaining} } @$v[0 .. 3] ], [ 2, 1, 0, 0 ], 'batch: remaining in order');
like($v->[5]{error}, qr/bad_request: bad period unit/, 'batch: a bad request fails alone');
is($v->[4]{id}, $bn->{id}, 'batch: the others are decided');
is_deeply(usage($bq, '202703'), { '20270310|a|ok' => 3, '20270310|a|quota_exceeded' => 1 }, 'batch: usage of each request');
like("" . $r->try_script('check', [ $bn->{key} ], [ $T0, 0, 'x' ]), qr/^ERR apimon bad_request: /, 'batch: wrong argument count');
is_deeply($r->run_script('check', [], [ $T0, 0 ]), [], 'empty batch');
$v = $r->run_script('check', [ $bn->{key}, $bn->{key} ],
                    [ $T0, 1, 'a', 0, 0, 0, '', 'loc', Apimon::Redis::key_digest($bn->{primary}), 2,
                      Apimon::Redis::key_digest($bn->{primary}), 1 ]);
like($v->[0], qr/^!.*no such location/, 'batch: a request naming no location fails alone');
like($v->[1], qr/^allowed\|/, '...the next is decided');

# --- window state in the hash: per-key counters of before, unit changes, the clock going back
my $mg = buy('q3');
$r->cmd('SET', "$mg->{key}:quota:plan:20270310", 2);
is(res($mg, $T0), 'allowed', 'a stamped counter of the previous layout is taken over');
is(res($mg, $T0), 'quota_exceeded', '...and counts: 2 + 1 = 3');
$r->cmd('HSET', $mg->{key}, 'c:quota:plan', 'month:202703:' . ms('2027-03-01') . ':' . ms('2027-04-01') . ':3');
is(res($mg, $T0), 'allowed', 'state of another unit: a new period (the day) starts');
is($r->cmd('GET', "$mg->{key}:quota:plan:202703"), 3, 'the other unit\'s count archived');
my $back = buy('q3');
chk($back, $T0) for 1 .. 3;
is(res($back, $end), 'allowed', 'next day');
is(res($back, $T0 + 5), 'quota_exceeded', 'clock back to the full day: its archived count applies');

# --- the hot path does not read catalog keys
my $h = buy('r5');
$r->cmd('DEL', 'apimon:plan:r5', 'apimon:product:p');
is(res($h, $T0), 'allowed', 'check works from the mirrored fields alone');

done_testing;
