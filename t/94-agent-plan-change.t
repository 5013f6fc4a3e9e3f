#!/usr/bin/perl
# Plan changes billed (docs/pricing.md, "Plan changes"): a month across two
# plans is one set of lines per plan, each pro-rated by the days it held (the
# day of the change goes to the new plan), its metered usage split by that
# day, its description naming the plan; a change waiting for the period's
# end is billed from then even when no script applied it yet; through
# t/stripe-server, once (a second run posts nothing).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent agent_env make_calls ms);
use JSON::PP;

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $env = agent_env($r, $stripe);
my $J = JSON::PP->new->canonical;

# the agent's catalog apply takes changeTo (catalog_apply checks it)
use File::Temp qw(tempdir);
my $dir = tempdir(CLEANUP => 1);
open my $cf, '>', "$dir/c.json" or die;
print $cf $J->encode({ products => [ { name => 'x', apis => ['a'], changeTo => ['y'] }, { name => 'y', apis => ['a'] } ],
                       plans => [ { name => 'x1', product => 'x', pricing => { model => 'free' } } ] });
close $cf;
my $ap = run_agent(env => $env, args => ['catalog', 'apply', "$dir/c.json"]);
is($ap->{rc}, 0, 'catalog apply with changeTo: exit 0') or diag $ap->{err};
is($r->cmd('HGET', 'apimon:product:x', 'changeTo'), ',y,', '... stored');

my $t0 = ms('2026-10-01');
$r->apply_catalog($J->encode({
    products => [ { name => 'geo', apis => ['lookup'] } ],
    plans => [
        { name => 'geo-bronze', product => 'geo', displayName => 'Bronze',
          pricing => { model => 'flat', currency => 'usd', amount => 2900 } },
        { name => 'geo-gold', product => 'geo', displayName => 'Gold',
          pricing => { model => 'flat', currency => 'usd', amount => 4900 } },
        { name => 'geo-meter-a', product => 'geo', displayName => 'Meter A',
          pricing => { model => 'metered', currency => 'usd', unitAmount => 1, unitSize => 10 } },
        { name => 'geo-meter-b', product => 'geo', displayName => 'Meter B',
          pricing => { model => 'metered', currency => 'usd', unitAmount => 3, unitSize => 10 } } ] }), $t0);
$r->put_developer('ann@example.com', { firstName => 'Ann' }, now => $t0);
$r->set_customer('developer', 'ann@example.com', 'cus_ann', $t0);

sub buy {
    my ($plan, $start) = @_;
    return $r->create_subscription(owner => 'ann@example.com', product => 'geo', plan => $plan,
        now => $t0, start => $start // $t0);
}
sub change {
    my ($s, $plan, $now, $eff) = @_;
    return decode_json($r->run_script('subscription_plan', [ $s->{key} ],
        [ Apimon::Redis::mgmt_args(now => $now, who => 'test'), $plan, $eff // 'now', '', '', '', '' ]));
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
sub lines_of {
    my ($got, $s) = @_;
    return [ sort grep { s/^\Q$s->{id}\E\|// } map { my $k = $_; $k } keys %$got ];
}

# Bronze 29.00 to Gold 49.00 on 2026-11-16 at 10:00
my $flat = buy('geo-bronze');
my $c = change($flat, 'geo-gold', ms('2026-11-16T10:00'));
is($c->{plan}, 'geo-gold', 'changed to gold');
is_deeply($r->cmd('LRANGE', "$flat->{key}:plans", 0, -1),
    [ "$t0|geo|geo-bronze", ms('2026-11-16T10:00') . '|geo|geo-gold' ], 'the plan history');

# metered: 100 calls before the change, 50 on its day before it, 70 after it, 30 later
my $met = buy('geo-meter-a');
make_calls($r, $met, 100, ms('2026-11-05T10:00'));
make_calls($r, $met, 50, ms('2026-11-20T09:00'));
change($met, 'geo-meter-b', ms('2026-11-20T12:00'));
make_calls($r, $met, 70, ms('2026-11-20T15:00'));
make_calls($r, $met, 30, ms('2026-11-25T15:00'));

# changed to gold on 2026-11-10, cancelled on 2026-11-20 at 08:00
my $ended = buy('geo-bronze');
change($ended, 'geo-gold', ms('2026-11-10T12:00'));
$r->set_state($ended->{id}, 'cancel', now => ms('2026-11-20T08:00'));

# to gold and back to bronze within one day: one plan, one line
my $back = buy('geo-bronze');
change($back, 'geo-gold', ms('2026-11-10T09:00'));
change($back, 'geo-bronze', ms('2026-11-10T17:00'));


# asked on 2026-10-20 for the period's end; no script read it since
my $pend = buy('geo-bronze');
my $p = change($pend, 'geo-gold', ms('2026-10-20T10:00'), 'periodEnd');
is($p->{plan}, 'geo-bronze', 'periodEnd: still bronze');
is($p->{nextPlan}, 'geo-gold', 'periodEnd: gold pending');
is($p->{nextAt}, ms('2026-11-01'), 'periodEnd: at the start of November');
ok(!$r->cmd('EXISTS', "$pend->{key}:plans"), 'periodEnd: no history before it is applied');

# October: every one of them on its first plan, one line each, plain ids
my $oct = bill('2026-10');
is($oct->{"$flat->{id}|fee"}{amount}, 2900, 'October: bronze, 29.00');
is($oct->{"$flat->{id}|fee"}{metadata}{apimon_plan}, 'geo-bronze', 'October: the plan bronze');
is($oct->{"$pend->{id}|fee"}{amount}, 2900, 'October: the pending one still bronze');
is_deeply(lines_of($oct, $flat), ['fee'], 'October: one line');

my $nov = bill('2026-11');
is_deeply(lines_of($nov, $flat), ['fee.1', 'fee.2'], 'November: a line per plan');
is($nov->{"$flat->{id}|fee.1"}{amount}, 1450, 'bronze: 15 of 30 days of 29.00 = 14.50');
is($nov->{"$flat->{id}|fee.2"}{amount}, 2450, 'gold: 15 of 30 days (the 16th on) of 49.00 = 24.50');
like($nov->{"$flat->{id}|fee.1"}{description}, qr/^Bronze \(geo-bronze\) 2026-11: 15 of 30 days$/,
    'bronze: the description names the plan');
like($nov->{"$flat->{id}|fee.2"}{description}, qr/^Gold \(geo-gold\) 2026-11: 15 of 30 days$/,
    'gold: the description names the plan');
is($nov->{"$flat->{id}|fee.1"}{metadata}{apimon_plan}, 'geo-bronze', 'bronze: metadata apimon_plan');
is($nov->{"$flat->{id}|fee.2"}{metadata}{apimon_plan}, 'geo-gold', 'gold: metadata apimon_plan');
is($nov->{"$flat->{id}|fee.1"}{period}{end}, ms('2026-11-16') / 1000, "bronze: its item's period ends on the 16th");
is($nov->{"$flat->{id}|fee.2"}{period}{start}, ms('2026-11-16') / 1000, "gold: its item's period starts on the 16th");

is_deeply(lines_of($nov, $met), ['usage.1', 'usage.2'], 'metered: a line per plan');
is($nov->{"$met->{id}|usage.1"}{amount}, 10, 'meter A: the 100 calls before the day of the change, 10 units at 0.01');
is($nov->{"$met->{id}|usage.2"}{amount}, 45,
    'meter B: the day of the change (50 + 70) and after (30), 15 units at 0.03');
like($nov->{"$met->{id}|usage.2"}{description}, qr/^Meter B \(geo-meter-b\) 2026-11: /, 'meter B: named');

is($nov->{"$ended->{id}|fee.1"}{amount}, 870, 'ended: bronze 9 days (the 1st to the 9th) = 8.70');
is($nov->{"$ended->{id}|fee.2"}{amount}, 1797, 'ended: gold 11 days (the 10th to the 20th) = 17.97');

is_deeply(lines_of($nov, $back), ['fee'], 'away and back within a day: one line');
is($nov->{"$back->{id}|fee"}{amount}, 2900, '... the whole month of bronze');

is_deeply(lines_of($nov, $pend), ['fee'], 'pending since October, not applied: one line');
is($nov->{"$pend->{id}|fee"}{amount}, 4900, '... the whole month of gold, from the 1st');
is($nov->{"$pend->{id}|fee"}{metadata}{apimon_plan}, 'geo-gold', '... named gold');

# once: a second run posts nothing
my $items = scalar $stripe->items;
my $again = run_agent(env => $env, args => ['bill', '--period', '2026-11']);
is($again->{rc}, 0, 'a second run: exit 0');
is(scalar $stripe->items, $items, 'a second run: no new item');
my $ledger = $r->cmd('HGETALL', 'apimon:bill:202611');
my %l = @$ledger;
ok(exists $l{"$flat->{id}|fee.1"} && exists $l{"$flat->{id}|fee.2"}, 'the ledger has a field per plan line');

# the agent's reads of the pending change are what the scripts do once it is
# read: applied from its time, the history and the bill unchanged
my $v = $r->view_subscription($pend->{id}, now => ms('2026-11-02'));
is($v->{plan}, 'geo-gold', 'read after its time: applied');
is_deeply($r->cmd('LRANGE', "$pend->{key}:plans", 0, -1),
    [ "$t0|geo|geo-bronze", ms('2026-11-01') . '|geo|geo-gold' ], '... from the start of November');
my $audit = $r->cmd('XREVRANGE', 'apimon:audit', '+', '-', 'COUNT', 1);
my %e = @{ $audit->[0][1] };
is($e{action}, 'subscription.changePlan.applied', '... audited');
is($e{who}, 'scheduled', '... by "scheduled"');

# an invoice (--create-invoices) holding a plan change: both lines, each naming its plan
$r->put_developer('bob@example.com', { firstName => 'Bob' }, now => $t0);
$r->set_customer('developer', 'bob@example.com', 'cus_bob', $t0);
my $inv = $r->create_subscription(owner => 'bob@example.com', product => 'geo', plan => 'geo-bronze',
    now => ms('2026-08-01'), start => ms('2026-08-01'));
change($inv, 'geo-gold', ms('2026-08-16T10:00'));
my $ir = run_agent(env => $env, args => ['bill', '--period', '2026-08', '--create-invoices', '--max-rps', '1000']);
is($ir->{rc}, 0, 'August with --create-invoices: exit 0') or diag $ir->{err};
my ($bobs) = grep { $_->{customer} eq 'cus_bob' } $stripe->invoices;
ok($bobs, "bob's invoice");
my @on = sort { $a->{metadata}{apimon_line} cmp $b->{metadata}{apimon_line} }
    grep { ($_->{invoice} // '') eq ($bobs->{id} // '-') } $stripe->items;
is_deeply([ map { $_->{description} } @on ],
    [ 'Bronze (geo-bronze) 2026-08: 15 of 31 days', 'Gold (geo-gold) 2026-08: 16 of 31 days' ],
    'the invoice: a line per plan, each naming it');
is($bobs->{total}, 1403 + 2529, 'the invoice total: 29.00 x 15/31 = 14.03 + 49.00 x 16/31 = 25.29');
is($bobs->{status}, 'open', 'finalized');

# more plans in a month than a subscription can be billed across: not priced, said
my $busy = buy('geo-bronze', ms('2026-08-01'));
my @seq = (('geo-gold', 'geo-bronze') x 5);
my $d = 1;
change($busy, $_, ms(sprintf('2026-09-%02dT12:00', $d += 2))) for @seq;
my $run = run_agent(env => $env, args => ['bill', '--period', '2026-09', '--dry-run']);
is($run->{rc}, 1, 'September: more than 8 plans in a month: exit 1');
like($run->{err}, qr/\Q$busy->{id}\E: not priced: more than 8 plans in 2026-09/, '... and says why');

done_testing;
