#!/usr/bin/perl
# billing-agent bill against a failing API: every line reaches the server
# exactly once whatever happens to a POST (500 after the item was stored, a
# timeout, a dropped connection, 429), and a reused key with other
# parameters (400 idempotency_error) fails that line only, for good.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent setup_models items_by_line agent_env);
use JSON::PP;

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;

sub fresh {
    $r->flushall;
    $stripe->reset;
    return setup_models($r);
}

sub bill {
    my (@extra) = @_;
    return run_agent(env => agent_env($r, $stripe),
        args => ['bill', '--period', '2026-01', '--max-rps', '1000', @extra]);
}

sub exactly_once {
    my ($m, $what) = @_;
    my $n = $stripe->key_counts;
    my @dup = grep { $n->{$_} > 1 } keys %$n;
    is_deeply(\@dup, [], "$what: no key stored twice");
    my $got = eval { items_by_line($stripe) } || {};
    is_deeply({ map { $_ => [ @{ $got->{$_} }[0, 1] ] } keys %$got }, $m->{expect},
        "$what: every line stored once with its amount");
}

sub faults_seen {
    my ($type) = @_;
    return scalar grep { ($_->{fault} // '') eq $type } $stripe->requests;
}

# 500 after the item was stored: the key replays the 500, so only the listing
# can tell; the agent finds the item there instead of posting again
my $m = fresh();
$stripe->fault('500_after_store', count => 2, after => 3);
my $run = bill();
is($run->{rc}, 0, '500 after store: exit 0') or diag $run->{err};
is(faults_seen('500_after_store'), 2, '500 after store: injected twice');
like($run->{err}, qr/reconciled .* found ii_/, '500 after store: reconciled by listing');
ok((grep { $_->{method} eq 'GET' && ($_->{query} // '') =~ /customer=cus_/ } $stripe->requests),
    '500 after store: GET /v1/invoiceitems?customer=...');
exactly_once($m, '500 after store');

# a 500 before anything was stored: the key replays that 500 from then on;
# the listing shows no item, so the line moves to a fresh key
$m = fresh();
$stripe->fault('500', count => 1, after => 5);
$run = bill();
is($run->{rc}, 0, '500 without store: exit 0') or diag $run->{err};
like($run->{err}, qr/only replays a 5xx and no item holds it; now apimon-\S+-u1/, '500 without store: re-keyed');
ok((grep { $_->{replayed} && ($_->{status} // 0) == 500 } $stripe->requests), '500 without store: the 500 was replayed');
exactly_once($m, '500 without store');
my ($rk) = grep { $_->{metadata}{apimon_key} =~ /-u1$/ } $stripe->items;
my ($rsub, $rline) = ($rk->{metadata}{apimon_subscription}, $rk->{metadata}{apimon_line});
is(decode_json($r->cmd('HGET', 'apimon:bill:202601', "$rsub|$rline"))->{key}, $rk->{metadata}{apimon_key},
    '500 without store: the ledger holds the new key');

# a timeout: the server stored the item and answers too late
$m = fresh();
$stripe->fault('slow', seconds => 3, after => 1);
$run = bill('--timeout', '1');
is($run->{rc}, 0, 'timeout: exit 0') or diag $run->{err};
like($run->{err}, qr/timed out|Timeout/i, 'timeout: logged');
like($run->{err}, qr/reconciled/, 'timeout: reconciled');
exactly_once($m, 'timeout');
sleep 3;    # let the slow answer go out before the next scenario

# a dropped connection before anything was stored: listed, not found, posted
$m = fresh();
$stripe->fault('drop', count => 1, after => 2);
$run = bill();
is($run->{rc}, 0, 'drop before store: exit 0') or diag $run->{err};
is(faults_seen('drop'), 1, 'drop before store: injected');
exactly_once($m, 'drop before store');

# a dropped connection after the item was stored
$m = fresh();
$stripe->fault('drop_after_store', count => 1, after => 4);
$run = bill();
is($run->{rc}, 0, 'drop after store: exit 0') or diag $run->{err};
is(faults_seen('drop_after_store'), 1, 'drop after store: injected');
exactly_once($m, 'drop after store');

# 429 with Stripe-Should-Retry: true is retried
$m = fresh();
$stripe->fault('429', count => 2, after => 0);
$run = bill();
is($run->{rc}, 0, '429: exit 0') or diag $run->{err};
is((grep { ($_->{status} // 0) == 429 } $stripe->requests), 2, '429: answered twice');
like($run->{err}, qr/rate_limit.*retrying/, '429: logged as retried');
exactly_once($m, '429');

# the same key already used with other parameters: 400 idempotency_error
$m = fresh();
my $victim = (sort keys %{ $m->{expect} })[0];
my ($sub, $line) = split /\|/, $victim;
my $key = "apimon-202601-$sub-$line-v1";
my $h = HTTP::Tiny->new->post_form($stripe->url . '/v1/invoiceitems',
    { customer => 'cus_other', amount => 1, currency => 'usd' },
    { headers => { Authorization => 'Bearer ' . $stripe->key, 'Idempotency-Key' => $key } });
is($h->{status}, 200, 'idempotency: key taken by another request');
$run = bill('--report', '-');
is($run->{rc}, 1, 'idempotency_error: exit 1');
like($run->{err}, qr/idempotency_error/, 'idempotency_error: logged');
like($run->{out}, qr/\Q$sub\E,[^\n]*,$line,[^\n]*,failed,,[^\n]*idempotency_error/, 'idempotency_error: reported');
is(decode_json($r->cmd('HGET', 'apimon:bill:202601', $victim))->{state}, 'failed',
    'idempotency_error: ledger says failed');
my $posts = grep { ($_->{idempotency_key} // '') eq $key } $stripe->requests;
is($posts, 2, 'idempotency_error: not retried');
my $n = () = $stripe->requests;
$run = bill();
is($run->{rc}, 1, 'idempotency_error: rerun still exit 1');
is((grep { ($_->{idempotency_key} // '') eq $key } $stripe->requests), $posts,
    'idempotency_error: rerun does not post it again');
my %exp = %{ $m->{expect} };
delete $exp{$victim};
my $got = items_by_line($stripe);
delete $got->{$victim};
is_deeply({ map { $_ => [ @{ $got->{$_} }[0, 1] ] } keys %$got }, \%exp,
    'idempotency_error: the other lines are posted');

# --retry-failed: the refused line gets a fresh key and is stored once
$run = bill('--retry-failed');
is($run->{rc}, 0, 'retry-failed: exit 0') or diag $run->{err};
like($run->{err}, qr/retrying failed line \Q$victim\E with key \Q$key\E-r1/, 'retry-failed: new key');
is(decode_json($r->cmd('HGET', 'apimon:bill:202601', $victim))->{state}, 'done', 'retry-failed: line done');
exactly_once($m, 'retry-failed');
$n = () = $stripe->requests;
$run = bill('--retry-failed');
is($run->{rc}, 0, 'retry-failed rerun: exit 0');
is((grep { $_->{method} eq 'POST' } ($stripe->requests)[$n .. scalar($stripe->requests) - 1]), 0,
    'retry-failed rerun: nothing posted');

done_testing;
