#!/usr/bin/perl
# The ledger lost after Stripe forgot the idempotency keys: `bill` refuses
# to post lines without an entry and says to run `reconcile`; `reconcile
# --period` lists what Stripe holds for the month's customers and rebuilds
# the missing entries (lines, invoices); a rerun then posts nothing twice.
# Both after a complete run (nothing left to post) and after a run killed
# halfway (the rest is posted once).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent spawn_agent wait_agent setup_models items_by_line agent_env);
use JSON::PP;
use Time::HiRes qw(sleep);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $env = agent_env($r, $stripe);
my @bill = ('bill', '--period', '2026-01', '--max-rps', '1000', '--create-invoices',
    '--lock-ttl', '1');
my @rec = ('reconcile', '--period', '2026-01', '--max-rps', '1000');

sub posts_since {
    my ($n) = @_;
    my @req = $stripe->requests;
    return scalar grep { $_->{method} eq 'POST' } @req[$n .. $#req];
}

my $run = run_agent(env => $env, args => \@bill);
is($run->{rc}, 0, 'billed') or diag $run->{err};
my %before = @{ $r->cmd('HGETALL', 'apimon:bill:202601') };
is(decode_json($before{'month|started'})->{state}, 'done', 'the ledger says a run started');
like($r->cmd('HGET', 'apimon:bill:started', '202601'), qr/^\d{13}$/, 'and so does apimon:bill:started');

# the ledger is lost a day later
$r->cmd('DEL', 'apimon:bill:202601');
$stripe->forget_keys;
my $n = () = $stripe->requests;
$run = run_agent(env => $env, args => \@bill);
is($run->{rc}, 1, 'lost ledger: bill exits 1');
like($run->{err}, qr/ledger was lost.*billing-agent reconcile --period 2026-01/s,
    'lost ledger: the error says how to reconcile');
is(posts_since($n), 0, 'lost ledger: nothing posted');
$run = run_agent(env => $env, args => [@bill[0 .. 2], '--dry-run']);
like($run->{err}, qr/ledger was lost/, 'lost ledger: a dry run says so too');

$run = run_agent(env => $env, args => ['reconcile']);
is($run->{rc}, 2, 'reconcile without --period: usage error');

$run = run_agent(env => $env, args => \@rec);
is($run->{rc}, 0, 'reconcile: exit 0') or diag $run->{err};
is(posts_since($n), 0, 'reconcile: posts nothing');
my @items = grep { /^item\t/ } split /\n/, $run->{out};
my @invs = grep { /^invoice\t/ } split /\n/, $run->{out};
is(scalar @items, scalar keys %{ $m->{expect} }, 'reconcile: lists every item of ours');
is(scalar @invs, 4, 'reconcile: lists every invoice of ours');
ok(!grep({ !/\trebuilt$/ } @items, @invs), 'reconcile: all rebuilt');
like($run->{err}, qr/rebuilt/, 'reconcile: a summary');
my %after = @{ $r->cmd('HGETALL', 'apimon:bill:202601') };
for my $k (sort keys %{ $m->{expect} }) {
    my $e = decode_json($after{$k} // '{}');
    is_deeply([ @$e{qw(state item amount currency)} ],
        [ 'done', decode_json($before{$k})->{item}, "$m->{expect}{$k}[0]", $m->{expect}{$k}[1] ],
        "reconcile: $k rebuilt done with its item");
}
is(decode_json($after{'invoice|cus_ann'})->{state}, 'done', 'reconcile: the invoice entry');
is(decode_json($after{'month|reconciled'})->{state}, 'done', 'reconcile: marked');

$run = run_agent(env => $env, args => [@rec]);
ok(!grep({ !/\tin the ledger$/ } grep { /^(?:item|invoice)\t/ } split /\n/, $run->{out}),
    'reconcile twice: everything already in the ledger');

$n = () = $stripe->requests;
$run = run_agent(env => $env, args => \@bill);
is($run->{rc}, 0, 'rerun: exit 0') or diag $run->{err};
is(posts_since($n), 0, 'rerun: nothing posted twice');

# a run killed halfway, the ledger lost, the keys forgotten
$r->flushall;
$stripe->reset;
$m = setup_models($r);
$stripe->fault('slow', seconds => 1.5, after => 4);
my $p = spawn_agent(env => $env, args => \@bill);
ok($stripe->wait_slow, 'halfway: inside the fifth item POST');
kill 'KILL', $p->{pid};
wait_agent($p);
sleep 2;
$r->cmd('DEL', 'apimon:bill:202601');
$stripe->forget_keys;
my $had = () = grep { defined $_->{metadata}{apimon_key} } $stripe->items;
$run = run_agent(env => $env, args => \@rec);
is($run->{rc}, 0, 'halfway: reconcile exit 0') or diag $run->{err};
is(scalar(grep { /^item\t/ } split /\n/, $run->{out}), $had, "halfway: the $had items found");
$run = run_agent(env => $env, args => \@bill);
is($run->{rc}, 0, 'halfway: rerun exit 0') or diag $run->{err};
my $got = items_by_line($stripe);           # dies on a duplicate
is_deeply({ map { $_ => [ @{ $got->{$_} }[0, 1] ] } keys %$got }, $m->{expect},
    'halfway: every line exactly once');
my @inv = $stripe->invoices;
is(scalar @inv, 4, 'halfway: one invoice per customer');
is_deeply([ map { "$_->{status}/$_->{finalized}" } @inv ], [ ('open/1') x 4 ],
    'halfway: each finalized once');
my %inv_of = map { $_->{customer} => $_->{id} } @inv;
ok(!grep({ ($_->[2]{invoice} // '') ne $inv_of{ $_->[2]{customer} } } values %$got),
    'halfway: every item on its invoice');

done_testing;
