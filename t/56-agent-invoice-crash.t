#!/usr/bin/perl
# --create-invoices killed with SIGKILL inside each step (creating the
# draft, posting an item onto it, finalizing it), then rerun after the lock
# expired and Stripe forgot the idempotency keys: one invoice per customer,
# every item on it exactly once, each invoice finalized exactly once.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent spawn_agent wait_agent setup_models items_by_line agent_env);
use Time::HiRes qw(sleep);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $env = agent_env($r, $stripe);
my @args = ('bill', '--period', '2026-01', '--create-invoices', '--max-rps', '1000',
    '--lock-ttl', '1');

my @steps = (
    [ 'create', '/v1/invoices', 1 ],
    [ 'item', '/v1/invoiceitems', 3 ],
    [ 'finalize', '/v1/invoices/*/finalize', 2 ],
);
for my $s (@steps) {
    my ($name, $path, $after) = @$s;
    $r->flushall;
    $stripe->reset;
    my $m = setup_models($r);
    $stripe->fault('slow', seconds => 1.5, after => $after, path => $path);
    my $p = spawn_agent(env => $env, args => \@args);
    ok($stripe->wait_slow, "$name: the agent is inside the slow POST");
    kill 'KILL', $p->{pid};
    is(wait_agent($p)->{rc}, -9, "$name: killed");
    sleep 2;                        # the lock and the slow answer are gone
    $stripe->forget_keys;           # and Stripe's idempotency keys too

    my $run = run_agent(env => $env, args => \@args);
    is($run->{rc}, 0, "$name: rerun exit 0") or diag $run->{err};
    like($run->{err}, qr/reconciled apimon-202601-\S+: (?:found|in_\w+ is open)/,
        "$name: the interrupted step was found at Stripe, not repeated");
    my @inv = $stripe->invoices;
    is_deeply([ sort map { $_->{customer} } @inv ], [qw(cus_acme cus_ann cus_bob cus_kappa)],
        "$name: one invoice per customer");
    is_deeply([ map { "$_->{status}/$_->{finalized}" } @inv ], [ ('open/1') x 4 ],
        "$name: each finalized exactly once");
    my $got = items_by_line($stripe);       # dies on a duplicate
    is_deeply({ map { $_ => [ @{ $got->{$_} }[0, 1] ] } keys %$got }, $m->{expect},
        "$name: every line exactly once");
    my %inv_of = map { $_->{customer} => $_->{id} } @inv;
    ok(!grep({ ($_->[2]{invoice} // '') ne $inv_of{ $_->[2]{customer} } } values %$got),
        "$name: every item on its customer's invoice");
}

done_testing;
