#!/usr/bin/perl
# Suspension policy per plan: "charge" (the default) bills a suspended
# subscription's fee in full; "pause" does not charge the days it was
# suspended all day.  subscription_state records the intervals the agent
# reads (suspendedAt while suspended, then suspensions "<from>-<to>,...").
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent agent_env make_calls ms);
use File::Temp qw(tempdir);
use JSON::PP;

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $env = agent_env($r, $stripe);
my $dir = tempdir(CLEANUP => 1);
my $J = JSON::PP->new->canonical;

sub file { my ($name, $text) = @_; open my $f, '>', "$dir/$name" or die; print $f $text; close $f; "$dir/$name" }
sub plan_of {
    my ($name, $susp, $pricing) = @_;
    return { name => $name, product => 'geo', (defined $susp ? (suspension => $susp) : ()),
             pricing => $pricing // { model => 'flat', currency => 'usd', amount => 2800 } };
}
my $doc = { products => [ { name => 'geo', apis => ['lookup'] } ],
            plans => [ plan_of('geo-charge'), plan_of('geo-charge2', 'charge'), plan_of('geo-pause', 'pause'),
                       plan_of('geo-pause-met', 'pause', { model => 'metered', currency => 'usd',
                           unitAmount => 5, unitSize => 1, rounding => 'up' }) ] };

# validation: the agent and the script both name the field
my $bad = $J->decode($J->encode($doc));
$bad->{plans}[2]{suspension} = 'skip';
my $run = run_agent(env => $env, args => ['catalog', 'apply', file('bad.json', $J->encode($bad))]);
is($run->{rc}, 2, 'suspension skip: exit 2');
like($run->{err}, qr/plans\[2\]\.suspension: must be one of charge, pause/, 'suspension skip: names the field');
my $v = $r->try_script('catalog_apply', [], [ $J->encode($bad), 0 ]);
like("$v", qr/bad_request.*plans\[2\]\.suspension: must be charge or pause/, 'catalog_apply refuses it too');
is($r->cmd('EXISTS', 'apimon:catalog'), 0, 'nothing applied');

$run = run_agent(env => $env, args => ['catalog', 'apply', file('c.json', $J->encode($doc))]);
is($run->{rc}, 0, 'apply: exit 0') or diag $run->{err};
is($r->cmd('HGET', 'apimon:plan:geo-pause', 'suspension'), 'pause', 'plan hash: pause');
is($r->cmd('HGET', 'apimon:plan:geo-charge', 'suspension'), 'charge', 'plan hash: charge by default');

my $t0 = ms('2026-01-01');
$r->put_developer('ann@example.com', { firstName => 'Ann', lastName => 'A', userName => 'ann' }, now => $t0);
$r->set_customer('developer', 'ann@example.com', 'cus_ann', $t0);
sub sub_on {
    my ($plan) = @_;
    return $r->create_subscription(owner => 'ann@example.com', product => 'geo', plan => $plan,
        now => $t0, start => $t0);
}
sub suspend { my ($s, $from, $to) = @_;
    $r->set_state($s->{id}, 'suspend', now => ms($from));
    $r->set_state($s->{id}, 'resume', now => ms($to)) if $to;
}

# February 2026: 28 days, 100 a day
my %s;
$s{charge} = sub_on('geo-charge');        suspend($s{charge}, '2026-02-05T10:00', '2026-02-12T08:00');
$s{charge2} = sub_on('geo-charge2');      suspend($s{charge2}, '2026-02-20');
$s{pause} = sub_on('geo-pause');          suspend($s{pause}, '2026-02-05T10:00', '2026-02-12T08:00');
$s{twice} = sub_on('geo-pause');          suspend($s{twice}, '2026-02-01', '2026-02-03');
                                          suspend($s{twice}, '2026-02-27T12:00', '2026-03-05');
$s{open} = sub_on('geo-pause');           suspend($s{open}, '2026-02-20');
$s{cancel} = sub_on('geo-pause');         suspend($s{cancel}, '2026-02-10');
$r->set_state($s{cancel}{id}, 'cancel', now => ms('2026-02-20'));
$s{short} = sub_on('geo-pause');          suspend($s{short}, '2026-02-05T10:00', '2026-02-05T12:00');
$s{met} = sub_on('geo-pause-met');
make_calls($r, $s{met}, 10, ms('2026-02-02'));
suspend($s{met}, '2026-02-05', '2026-02-12');
make_calls($r, $s{met}, 4, ms('2026-02-13'));

my $h = { @{ $r->cmd('HGETALL', Apimon::Redis::sub_key($s{pause}{id})) } };
is($h->{suspensions}, ms('2026-02-05T10:00') . '-' . ms('2026-02-12T08:00'), 'resume records the interval');
ok(!exists $h->{suspendedAt}, 'resume clears suspendedAt');
$h = { @{ $r->cmd('HGETALL', Apimon::Redis::sub_key($s{twice}{id})) } };
is($h->{suspensions}, join(',', ms('2026-02-01') . '-' . ms('2026-02-03'),
    ms('2026-02-27T12:00') . '-' . ms('2026-03-05')), 'two suspensions, in order');
is($r->cmd('HGET', Apimon::Redis::sub_key($s{open}{id}), 'suspendedAt'), ms('2026-02-20'),
    'still suspended: suspendedAt');
is($r->cmd('HGET', Apimon::Redis::sub_key($s{cancel}{id}), 'suspensions'),
    ms('2026-02-10') . '-' . ms('2026-02-20'), 'cancel while suspended closes the interval');

$run = run_agent(env => $env, args => ['bill', '--period', '2026-02']);
is($run->{rc}, 0, 'bill 2026-02: exit 0') or diag $run->{err};
my %got;
for my $it ($stripe->items) {
    $got{"$it->{metadata}{apimon_subscription}|$it->{metadata}{apimon_line}"} = $it;
}
my %want = (
    charge => [ 2800, qr/28 of 28 days$/, 'charge: the full fee despite a suspension' ],
    charge2 => [ 2800, qr/28 of 28 days$/, 'charge (explicit), still suspended: the full fee' ],
    pause => [ 2200, qr/22 of 28 days \(6 suspended not charged\)/, 'pause: 6 whole days (6th-11th) not charged' ],
    open => [ 1900, qr/19 of 28 days \(9 suspended/, 'pause, still suspended from the 20th: 19 days' ],
    cancel => [ 900, qr/9 of 28 days \(10 suspended/, 'pause, suspended the 10th, cancelled the 20th: 9 days' ],
    short => [ 2800, qr/28 of 28 days$/, 'pause: two hours suspended in a day: the day is charged' ],
);
# twice: the 1st and 2nd wholly suspended, the 27th partly active, the 28th
# wholly suspended: 25 days
$want{twice} = [ 2500, qr/25 of 28 days \(3 suspended/, 'pause twice: the 1st, 2nd and 28th not charged' ];
for my $k (sort keys %want) {
    my $it = $got{"$s{$k}{id}|fee"};
    is($it->{amount}, $want{$k}[0], $want{$k}[2]);
    like($it->{description} // '', $want{$k}[1], "$k: description");
}
is($got{"$s{met}{id}|usage"}{amount}, 70, 'pause on a metered plan: usage billed as used (14 calls)');

done_testing;
