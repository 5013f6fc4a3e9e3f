#!/usr/bin/perl
# --create-invoices: one invoice per customer holding its pending items,
# created once (idempotent key + ledger); lines end done with the invoice id.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent setup_models agent_env);
use JSON::PP;

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $env = agent_env($r, $stripe);
my @args = ('bill', '--period', '2026-01', '--create-invoices', '--max-rps', '1000');

# the first invoice POST fails with a 429 once: retried
$stripe->fault('429', count => 1, path => '/v1/invoices');
my $run = run_agent(env => $env, args => \@args);
is($run->{rc}, 0, 'exit 0') or diag $run->{err};
my @inv = $stripe->invoices;
is_deeply([ sort map { $_->{customer} } @inv ], [qw(cus_acme cus_ann cus_bob cus_kappa)], 'one invoice per customer');
my @items = $stripe->items;
is(scalar @items, scalar keys %{ $m->{expect} }, 'all items posted');
ok(!grep({ !defined $_->{invoice} } @items), 'every item is on an invoice');
for my $i (@inv) {
    my $sum = 0;
    $sum += $_->{amount} for grep { $_->{invoice} eq $i->{id} } @items;
    is($i->{total}, $sum, "invoice of $i->{customer} totals its items");
}
my %ledger = @{ $r->cmd('HGETALL', 'apimon:bill:202601') };
for my $k (sort keys %{ $m->{expect} }) {
    my $l = decode_json($ledger{$k});
    is($l->{state}, 'done', "$k done");
    like($l->{invoice} // '', qr/^in_/, "$k carries its invoice id");
}
is(decode_json($ledger{'invoice|cus_ann'})->{state}, 'done', 'invoice ledger entry done');
my @ik = map { $_->{idempotency_key} } grep { $_->{path} eq '/v1/invoices' } $stripe->requests;
like($ik[0], qr/^apimon-202601-invoice-cus_/, 'invoices carry an idempotency key');

my $n = () = $stripe->requests;
$run = run_agent(env => $env, args => \@args);
is($run->{rc}, 0, 'rerun: exit 0');
is(scalar($stripe->invoices), 4, 'rerun: no new invoice');
is((grep { $_->{method} eq 'POST' } ($stripe->requests)[$n .. scalar($stripe->requests) - 1]), 0,
    'rerun: no POST');

done_testing;
