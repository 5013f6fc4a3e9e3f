#!/usr/bin/perl
# Subscriptions whose owner has no billing customer: reported, exit 1, the
# rest billed; once `billing-agent customer set` maps them, the next run
# bills them exactly once.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent setup_models items_by_line agent_env ms);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $env = agent_env($r, $stripe);
my $t0 = ms('2025-12-01');

$r->put_developer('carl@example.com', { firstName => 'Carl', lastName => 'C',
    userName => 'carl' }, now => $t0);
$r->put_appgroup('zeta', { displayName => 'Zeta' }, now => $t0);
my $carl = $r->create_subscription(owner => 'carl@example.com', product => 'geo',
    plan => 'geo-flat', now => $t0, start => $t0);
my $zeta = $r->create_subscription(owner_kind => 'appgroup', owner => 'zeta',
    product => 'geo', plan => 'geo-flat', now => $t0, start => $t0);

my $run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--report', '-']);
is($run->{rc}, 1, 'unmapped: exit 1');
like($run->{err}, qr/subscription \Q$carl->{id}\E .*no billing customer/, 'unmapped developer logged');
like($run->{err}, qr/subscription \Q$zeta->{id}\E .*appgroup zeta/, 'unmapped app group logged');
like($run->{out}, qr/^2026-01,\Q$carl->{id}\E,,developer:carl\@example.com,geo-flat,flat,fee,31,3100,usd,unmapped,/m,
    'unmapped reported');
my $got = items_by_line($stripe);
is(scalar keys %$got, scalar keys %{ $m->{expect} }, 'the mapped ones are billed');
ok(!exists $got->{"$carl->{id}|fee"}, 'the unmapped one is not');
is($r->cmd('HEXISTS', 'apimon:bill:202601', "$carl->{id}|fee"), 0, 'no ledger entry for it');

# map them with the agent's own command
my $set = run_agent(env => $env, args => ['customer', 'set', 'carl@example.com', 'cus_carl']);
is($set->{rc}, 0, 'customer set developer: exit 0') or diag $set->{err};
like($set->{out}, qr/developer carl\@example.com: customer cus_carl/, 'customer set: confirms');
$set = run_agent(env => $env, args => ['customer', 'set', 'appgroup:zeta', 'cus_zeta']);
is($set->{rc}, 0, 'customer set appgroup: exit 0');
is($r->cmd('HGET', 'apimon:appgroup:zeta', 'customer'), 'cus_zeta', 'stored by the script');
$set = run_agent(env => $env, args => ['customer', 'set', 'nobody@example.com', 'cus_x']);
is($set->{rc}, 2, 'customer set for an unknown developer: exit 2');
like($set->{err}, qr/not_found/, 'customer set: not_found');
$set = run_agent(env => $env, args => ['customer', 'set', 'carl@example.com']);
is($set->{rc}, 2, 'customer set: usage error');

$run = run_agent(env => $env, args => ['bill', '--period', '2026-01']);
is($run->{rc}, 0, 'mapped: exit 0') or diag $run->{err};
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01']);
is($run->{rc}, 0, 'and again: exit 0');
$got = items_by_line($stripe);
is_deeply($got->{"$carl->{id}|fee"} && [ @{ $got->{"$carl->{id}|fee"} }[0, 1] ], [3100, 'usd'],
    'developer billed once mapped');
is($got->{"$carl->{id}|fee"}[2]{customer}, 'cus_carl', 'to its customer');
is($got->{"$zeta->{id}|fee"}[2]{customer}, 'cus_zeta', 'app group billed once mapped');
my $n = $stripe->key_counts;
is_deeply([ grep { $n->{$_} > 1 } keys %$n ], [], 'nothing twice');

done_testing;
