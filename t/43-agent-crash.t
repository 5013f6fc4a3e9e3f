#!/usr/bin/perl
# A run killed with SIGKILL in the middle of a POST, then rerun: every line
# ends up stored exactly once.  And two overlapping runs: the second exits
# with the "locked" code and touches nothing.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent spawn_agent wait_agent setup_models items_by_line agent_env);
use JSON::PP;
use Time::HiRes qw(time sleep);
use File::Temp;

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $env = agent_env($r, $stripe);
my @args = ('bill', '--period', '2026-01', '--max-rps', '1000', '--lock-ttl', '2');

sub wait_for_fault {
    my $t0 = time;
    while (time - $t0 < 10) {
        return 1 if grep { ($_->{fault} // '') eq 'slow' } $stripe->requests;
        sleep 0.05;
    }
    return 0;
}

# the fifth POST hangs; the agent dies while waiting for it
$stripe->fault('slow', seconds => 2, after => 4);
my $p = spawn_agent(env => $env, args => \@args);
ok(wait_for_fault(), 'crash: the agent is inside the slow POST');
kill 'KILL', $p->{pid};
my $run = wait_agent($p);
is($run->{rc}, -9, 'crash: killed by SIGKILL');

my $ledger = $r->cmd('HGETALL', 'apimon:bill:202601');
my %st = @$ledger;
my @computed = grep { decode_json($st{$_})->{state} eq 'computed' } keys %st;
is(scalar @computed, 1, 'crash: one line left computed (its outcome unknown)');
is((grep { !/^month\|/ && decode_json($st{$_})->{state} eq 'done' } keys %st), 4,
    'crash: four lines done');
is($r->cmd('EXISTS', 'apimon:bill:lock'), 1, 'crash: the dead run\'s lock is still there');

# while the lock lives, a rerun is refused with the locked code
$run = run_agent(env => $env, args => \@args);
is($run->{rc}, 3, 'locked: exit 3');
like($run->{err}, qr/another billing run holds the lock/, 'locked: says so');

sleep 2.5;      # the lock expires (--lock-ttl 2) and the slow answer is gone
$run = run_agent(env => $env, args => \@args);
is($run->{rc}, 0, 'rerun after crash: exit 0') or diag $run->{err};
like($run->{err}, qr/reconciled apimon-202601-.*found ii_/, 'rerun: the computed line was found by listing');
my $n = $stripe->key_counts;
is_deeply([ grep { $n->{$_} > 1 } keys %$n ], [], 'rerun: no key stored twice');
my $got = items_by_line($stripe);
is_deeply({ map { $_ => [ @{ $got->{$_} }[0, 1] ] } keys %$got }, $m->{expect},
    'rerun: every line stored exactly once with its amount');

# the same again, but the kill lands before the server stored anything:
# the line is computed, the listing finds nothing, it is posted once
$r->flushall;
$stripe->reset;
$m = setup_models($r);
$stripe->fault('drop', count => 1, after => 2);     # fails the third POST ...
$stripe->fault('slow', seconds => 3, after => 0);   # ... and its retry hangs
$p = spawn_agent(env => $env, args => [@args, '--max-retries', '5']);
ok(wait_for_fault(), 'crash 2: inside the retried POST');
kill 'KILL', $p->{pid};
wait_agent($p);
sleep 3.5;
$run = run_agent(env => $env, args => \@args);
is($run->{rc}, 0, 'crash 2: rerun exit 0') or diag $run->{err};
$n = $stripe->key_counts;
is_deeply([ grep { $n->{$_} > 1 } keys %$n ], [], 'crash 2: no key stored twice');
$got = items_by_line($stripe);
is_deeply({ map { $_ => [ @{ $got->{$_} }[0, 1] ] } keys %$got }, $m->{expect},
    'crash 2: every line exactly once');

# two overlapping runs
$r->flushall;
$stripe->reset;
$m = setup_models($r);
$stripe->fault('slow', seconds => 2, after => 0);
my $rep = File::Temp->new(SUFFIX => '.csv');
my $first = spawn_agent(env => $env, args => ['bill', '--period', '2026-01', '--max-rps', '1000',
    '--report', $rep->filename]);
ok(wait_for_fault(), 'overlap: first run is busy');
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--report', $rep->filename]);
is($run->{rc}, 3, 'overlap: second run exits 3');
my $one = wait_agent($first, 30);
is($one->{rc}, 0, 'overlap: first run completes') or diag $one->{err};
my @rows = do { open my $f, '<', $rep->filename or die; <$f> };
is(scalar(grep { /,done,/ } @rows), scalar keys %{ $m->{expect} },
    'overlap: the second run left the first one\'s report alone');
$got = items_by_line($stripe);
is(scalar keys %$got, scalar keys %{ $m->{expect} }, 'overlap: every line once');
is($r->cmd('EXISTS', 'apimon:bill:lock'), 0, 'overlap: lock released by its owner');

done_testing;
