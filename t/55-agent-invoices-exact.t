#!/usr/bin/perl
# --create-invoices: each customer's invoice holds exactly our items (a
# draft created first with pending_invoice_items_behavior=exclude, each item
# posted with invoice=<it>), then finalized once; a pending item of the
# customer that is not ours stays pending.  --draft leaves drafts, which a
# later run without it finalizes.  The stripe-server's invoice rules too.
# Then a run killed with SIGKILL inside each step (creating the draft,
# posting an item onto it, finalizing it) and rerun after the lock expired
# and Stripe forgot the idempotency keys: one invoice per customer, every
# item on it exactly once, each invoice finalized exactly once.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent spawn_agent wait_agent setup_models items_by_line agent_env);
use Time::HiRes qw(sleep);
use JSON::PP;

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $env = agent_env($r, $stripe);
my @args = ('bill', '--period', '2026-01', '--create-invoices', '--max-rps', '1000');

# another integration's pending item on one of our customers
my $foreign = $stripe->api_post('/v1/invoiceitems', customer => 'cus_ann',
    amount => 999, currency => 'usd', description => 'not ours');
like($foreign->{id}, qr/^ii_/, 'a foreign pending item exists');

my $run = run_agent(env => $env, args => \@args);
is($run->{rc}, 0, 'exit 0') or diag $run->{err};
my @inv = $stripe->invoices;
is_deeply([ sort map { $_->{customer} } @inv ], [qw(cus_acme cus_ann cus_bob cus_kappa)],
    'one invoice per customer');
is_deeply([ map { $_->{status} } @inv ], [ ('open') x 4 ], 'every invoice finalized (open)');
is_deeply([ map { $_->{finalized} } @inv ], [ (1) x 4 ], 'each finalized once');
ok(!grep({ !$_->{auto_advance} } @inv), 'finalized with auto_advance');
my %by_id = map { $_->{id} => $_ } $stripe->items;
is($by_id{ $foreign->{id} }{invoice}, undef, 'the foreign item stays pending');
my @ours = grep { defined $_->{metadata}{apimon_key} } values %by_id;
is(scalar @ours, scalar keys %{ $m->{expect} }, 'all our items posted');
for my $i (@inv) {
    my @on = grep { ($_->{invoice} // '') eq $i->{id} } values %by_id;
    ok(!grep({ !defined $_->{metadata}{apimon_key} } @on), "invoice of $i->{customer}: only our items");
    my $sum = 0;
    $sum += $_->{amount} for grep { $_->{customer} eq $i->{customer} } @ours;
    is($i->{total}, $sum, "invoice of $i->{customer} holds all its items ($sum)");
}

my @req = $stripe->requests;
my @create = grep { $_->{method} eq 'POST' && $_->{path} eq '/v1/invoices' } @req;
is(scalar @create, 4, 'four invoice POSTs');
like($create[0]{body}, qr/pending_invoice_items_behavior=exclude/, 'created excluding pending items');
like($create[0]{body}, qr/auto_advance=false/, 'the draft does not advance on its own');
my @item_posts = grep { $_->{method} eq 'POST' && $_->{path} eq '/v1/invoiceitems'
    && defined $_->{idempotency_key} } @req;
ok(!grep({ $_->{body} !~ /(?:^|&)invoice=in_/ } @item_posts), 'every item names its invoice');
my @fin = grep { $_->{path} =~ m{^/v1/invoices/in_\w+/finalize$} } @req;
is(scalar @fin, 4, 'four finalize POSTs');
like($fin[0]{idempotency_key}, qr/^apimon-202601-invoice-cus_\w+-finalize$/, 'finalize has its own key');

# every request names an operation of Stripe's API and only its declared
# parameters (the spec's subset in ../shared, when it is there)
SKIP: {
    my $spec_file = $ENV{APIMON_STRIPE_OPENAPI}
        // '../shared/stripe-openapi/spec3-2023-08-16-billing-subset.json';
    skip 'no Stripe OpenAPI subset here', 1 unless -r $spec_file;
    my $spec = decode_json(do { local $/; open my $f, '<', $spec_file or die; <$f> });
    my %ops = map { $_ => 1 } @{ $spec->{operations} };
    my @bad;
    for my $q (@req) {
        (my $tpl = $q->{path}) =~ s{^/v1/invoices/in_\w+}{/v1/invoices/{invoice}};
        push(@bad, "$q->{method} $tpl: no such operation"), next
            unless $ops{"$q->{method} $tpl"};
        my $op = $spec->{paths}{$tpl}{ lc $q->{method} } or next;
        my %known = map { $_->{name} => 1 } @{ $op->{parameters} // [] };
        my $props = $op->{requestBody}{content}{'application/x-www-form-urlencoded'}{schema}{properties};
        $known{$_} = 1 for keys %{ $props // {} };
        my $form = $q->{method} eq 'POST' ? $q->{body} : $q->{query};
        for my $pair (split /&/, $form // '') {
            (my $k = $pair) =~ s/=.*//;
            $k =~ s/%5B.*//i;
            $k =~ s/\[.*//;
            push @bad, "$q->{method} $tpl: $k" unless $known{$k};
        }
    }
    is_deeply(\@bad, [], 'every request and parameter is declared by the API');
}

my %ledger = @{ $r->cmd('HGETALL', 'apimon:bill:202601') };
for my $c (qw(cus_acme cus_ann cus_bob cus_kappa)) {
    is(decode_json($ledger{"invoice|$c"})->{state}, 'done', "invoice|$c done");
    is(decode_json($ledger{"finalize|$c"})->{state}, 'done', "finalize|$c done");
}
for my $k (sort keys %{ $m->{expect} }) {
    my $l = decode_json($ledger{$k});
    is($l->{state}, 'done', "$k done");
}

my $n = () = $stripe->requests;
$run = run_agent(env => $env, args => \@args);
is($run->{rc}, 0, 'rerun: exit 0');
is((grep { $_->{method} eq 'POST' } ($stripe->requests)[$n .. scalar($stripe->requests) - 1]), 0,
    'rerun: no POST');

# the server: finalizing twice is refused, an item on a finalized invoice too
my $again = $stripe->api_post("/v1/invoices/$inv[0]{id}/finalize");
is($again->{error}{type}, 'invalid_request_error', 'server: finalize twice -> error');
my $late = $stripe->api_post('/v1/invoiceitems', customer => $inv[0]{customer},
    amount => 5, currency => 'usd', invoice => $inv[0]{id});
is($late->{error}{code}, 'invoice_not_editable', 'server: no item onto an open invoice');
my $miss = $stripe->api_post('/v1/invoiceitems', customer => 'cus_ann',
    amount => 5, currency => 'usd', invoice => 'in_nope');
is($miss->{error}{code}, 'resource_missing', 'server: no such invoice');

# --draft: drafts with every item; a later run without it finalizes them
$r->flushall;
$stripe->reset;
$m = setup_models($r);
$run = run_agent(env => $env, args => [@args, '--draft']);
is($run->{rc}, 0, 'draft: exit 0') or diag $run->{err};
@inv = $stripe->invoices;
is_deeply([ map { $_->{status} } @inv ], [ ('draft') x 4 ], 'draft: four drafts');
is(scalar(grep { defined $_->{invoice} } $stripe->items), scalar keys %{ $m->{expect} },
    'draft: every item on a draft');
is((grep { $_->{path} =~ /finalize/ } $stripe->requests), 0, 'draft: nothing finalized');
$run = run_agent(env => $env, args => \@args);
is($run->{rc}, 0, 'after draft: exit 0') or diag $run->{err};
@inv = $stripe->invoices;
is_deeply([ map { $_->{status} } @inv ], [ ('open') x 4 ], 'after draft: finalized');
is(scalar @inv, 4, 'after draft: no new invoice');

# ------------------------------------------------------------ crashes
@args = ('bill', '--period', '2026-01', '--create-invoices', '--max-rps', '1000',
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
