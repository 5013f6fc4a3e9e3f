#!/usr/bin/perl
# Price versions: every applied price is kept with the time it took effect
# (apimon:plan:<name>:prices); a month is priced with the prices in force in
# it, a change mid-month pro-rated by day; `catalog apply --effective DATE`
# schedules a change, which the price in force now does not show.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent agent_env make_calls ms items_by_line);
use File::Temp qw(tempdir);
use JSON::PP;

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $env = agent_env($r, $stripe);
my $dir = tempdir(CLEANUP => 1);
my $J = JSON::PP->new->canonical;

sub catalog {
    my ($fee, $unit, %o) = @_;
    return $J->encode({
        products => [ { name => 'geo', apis => ['lookup'] } ],
        plans => [
            { name => 'geo-flat', product => 'geo', displayName => 'Flat',
              pricing => { model => 'flat', currency => $o{currency} // 'usd', amount => $fee } },
            { name => 'geo-metered', product => 'geo',
              pricing => { model => 'metered', currency => 'usd', unitAmount => $unit,
                           unitSize => 10, rounding => 'up' } } ] });
}
sub file { my ($name, $text) = @_; open my $f, '>', "$dir/$name" or die; print $f $text; close $f; "$dir/$name" }
sub apply {
    my ($text, @eff) = @_;
    return run_agent(env => $env, args => ['catalog', 'apply', file('c.json', $text), @eff]);
}
sub versions {
    my %v = @{ $r->cmd('ZRANGE', 'apimon:plan:geo-flat:prices', 0, -1, 'WITHSCORES') };
    return [ map { [ $v{$_}, decode_json((split /\|/, $_, 2)[1])->{amount} ] }
             sort { $v{$a} <=> $v{$b} } keys %v ];
}
sub bill {
    my ($period) = @_;
    my $run = run_agent(env => $env, args => ['bill', '--period', $period]);
    is($run->{rc}, 0, "bill $period: exit 0") or diag $run->{err};
    my %got;
    for my $it ($stripe->items) {
        next unless ($it->{metadata}{apimon_period} // '') eq $period;
        $got{"$it->{metadata}{apimon_subscription}|$it->{metadata}{apimon_line}"} = $it;
    }
    return \%got;
}

# 29.00 from the start (the catalog's first price is in force since ever)
my $t0 = ms('2026-09-01');
$r->apply_catalog(catalog(2900, 7), $t0);
is_deeply(versions(), [ [ 0, 2900 ] ], 'first apply: one version, in force since ever');
$r->put_developer('ann@example.com', { firstName => 'Ann', lastName => 'A', userName => 'ann' }, now => $t0);
$r->set_customer('developer', 'ann@example.com', 'cus_ann', $t0);
my $flat = $r->create_subscription(owner => 'ann@example.com', product => 'geo', plan => 'geo-flat',
    now => $t0, start => $t0);
my $late = $r->create_subscription(owner => 'ann@example.com', product => 'geo', plan => 'geo-flat',
    now => $t0, start => ms('2026-11-10T18:00'));
my $met = $r->create_subscription(owner => 'ann@example.com', product => 'geo', plan => 'geo-metered',
    now => $t0, start => $t0);
make_calls($r, $met, 100, ms('2026-11-05T10:00'));   # 10 units

# bad --effective: refused before Redis, naming the option
for my $bad ('2026-11-31', '16/11/2026', '2026-11-16T10:00', '1999-12-31') {
    my $run = apply(catalog(3900, 9), '--effective', $bad);
    is($run->{rc}, 2, "--effective $bad: exit 2");
    like($run->{err}, qr/--effective \Q$bad\E: not a date/, "--effective $bad: names the option");
}
is($r->cmd('HGET', 'apimon:catalog', 'version'), 1, 'bad --effective: nothing applied');
for my $cmd (['bill', '--dry-run'], ['catalog', 'show']) {
    my $run = run_agent(env => $env, args => [@$cmd, '--effective', '2026-11-16']);
    is($run->{rc}, 2, "--effective with @$cmd: exit 2");
    like($run->{err}, qr/--effective: only with catalog apply/, "--effective with @$cmd: says so");
}

# 29.00 -> 39.00 (and 7 -> 9 a unit) on 2026-11-16, applied after the fact
my $run = apply(catalog(3900, 9), '--effective', '2026-11-16');
is($run->{rc}, 0, 'apply --effective 2026-11-16: exit 0') or diag $run->{err};
like($run->{out}, qr/^prices effective 2026-11-16T00:00:00Z$/m, 'apply: prints when the prices take effect');
is_deeply(versions(), [ [ 0, 2900 ], [ ms('2026-11-16'), 3900 ] ], 'two versions, the second from the 16th');
is(decode_json($r->cmd('HGET', 'apimon:plan:geo-flat', 'pricing'))->{amount}, 3900,
    'the plan hash shows the price in force now');

# October, billed after the change: the old price
my $oct = bill('2026-10');
is($oct->{"$flat->{id}|fee"}{amount}, 2900, 'October billed after the change: 29.00');

# November: 15 days at each price; the late one 6 old days and 15 new
my $nov = bill('2026-11');
is($nov->{"$flat->{id}|fee"}{amount}, 3400, 'November: (15 x 29.00 + 15 x 39.00) / 30 = 34.00');
like($nov->{"$flat->{id}|fee"}{description}, qr/^Flat \(geo-flat\) 2026-11: 30 of 30 days: 15 at 29\.00 usd \+ 15 at 39\.00 usd$/,
    'November: the description shows both versions');
is($nov->{"$late->{id}|fee"}{amount}, 2530, 'started the 10th: (6 x 29.00 + 15 x 39.00) / 30 = 25.30');
is($nov->{"$met->{id}|usage"}{amount}, 80, 'metered: 10 units at 7 and at 9, weighted 15/15 = 80');

# a scheduled change: kept, not in force before its date
my @t = gmtime(time + 86400 * 70);
my $future = sprintf('%04d-%02d-01T00:00:00Z', $t[5] + 1900, $t[4] + 1);
$run = apply(catalog(4900, 9), '--effective', $future);
is($run->{rc}, 0, "apply --effective $future: exit 0") or diag $run->{err};
is(scalar @{ versions() }, 3, 'the scheduled version is stored');
is(versions()->[2][1], 4900, '... with its price');
is(decode_json($r->cmd('HGET', 'apimon:plan:geo-flat', 'pricing'))->{amount}, 3900,
    'scheduled: the price in force now is still 39.00');
$run = run_agent(env => $env, args => ['catalog', 'show']);
like($run->{out}, qr/^plan geo-flat: 2 subscriptions\n  price since ever: \{[^\n]*"amount":2900[^\n]*\n  price since 2026-11-16T00:00:00Z: [^\n]*"amount":3900[^\n]*\n  price since \Q$future\E: [^\n]*"amount":4900/m,
    'catalog show: each plan\'s price versions');
my @n = gmtime;
my $cur = sprintf('%04d-%02d', $n[5] + 1900, $n[4] + 1);
$run = run_agent(env => $env, args => ['bill', '--period', $cur, '--allow-open', '--dry-run']);
is($run->{rc}, 0, 'dry run of this month: exit 0') or diag $run->{err};
like($run->{out}, qr/apimon_subscription%5D=\Q$flat->{id}\E&/, 'dry run: the flat subscription is billed');
my ($body) = grep { /\Q$flat->{id}\E/ && /apimon_line%5D=fee/ } split /\n/, $run->{out};
like($body // '', qr/amount=3900&/, 'this month: 39.00, the scheduled price not applied before its date');

# a later apply effective earlier replaces what was scheduled after it
$run = apply(catalog(3900, 9), '--effective', '2026-11-16T00:00:00+00:00');
is($run->{rc}, 0, 'apply RFC 3339 --effective: exit 0') or diag $run->{err};
is_deeply(versions(), [ [ 0, 2900 ], [ ms('2026-11-16'), 3900 ] ],
    'the scheduled version is replaced; the same price adds no version');

# a change of currency inside a month cannot be priced: the month is refused
$run = apply(catalog(3900, 9, currency => 'eur'), '--effective', '2026-09-16');
is($run->{rc}, 0, 'apply a currency change for September: exit 0') or diag $run->{err};
$run = run_agent(env => $env, args => ['bill', '--period', '2026-09', '--dry-run']);
is($run->{rc}, 1, 'September across currencies: exit 1');
like($run->{err}, qr/changed currency within the period \(usd to eur\)/, '... and says why');

# the month before a change of currency: its lines, ledger and report in
# the currency they were priced in, not the one in force now
$run = apply(catalog(2900, 7), '--effective', '2026-09-01');
is($run->{rc}, 0, 'back to usd from September') or diag $run->{err};
$run = apply(catalog(3900, 9, currency => 'eur'), '--effective', '2026-10-01');
is($run->{rc}, 0, 'eur from October') or diag $run->{err};
my $sep = bill('2026-09');
is($sep->{"$flat->{id}|fee"}{currency}, 'usd', 'September: posted in usd');
my $led = decode_json($r->cmd('HGET', 'apimon:bill:202609', "$flat->{id}|fee"));
is($led->{currency}, 'usd', 'September: the ledger entry says usd');
is($led->{amount}, '2900', 'September: 29.00');

done_testing;
