#!/usr/bin/perl
# Ledger entries written by an agent before entries carried the customer,
# amount and currency they bill (only state, key, body, item, error) still
# live in users' Redis: a run reads those from the stored body, and what the
# body says is what is posted, reported and invoiced, even when the pricing
# or the customer mapping changed since.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent setup_models items_by_line agent_env);
use JSON::PP;
use File::Temp qw(tempdir);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $env = agent_env($r, $stripe);
my @period = ('--period', '2026-01', '--max-rps', '1000');
my $m = setup_models($r);
my $dir = tempdir(CLEANUP => 1);

# the requests a run would send, as the old agent stored them: computed
my $run = run_agent(env => $env, args => ['bill', @period, '--dry-run']);
is($run->{rc}, 0, 'dry run: exit 0') or diag $run->{err};
my %old;
for (split /\n/, $run->{out}) {
    my (undef, $key, $body) = split /\t/;
    $key =~ s/^Idempotency-Key: //;
    my %f = map { my ($k, $v) = split /=/, $_, 2; ($k => $v) } split /&/, $body;
    $old{"$f{'metadata%5Bapimon_subscription%5D'}|$f{'metadata%5Bapimon_line%5D'}"} =
        { key => $key, body => $body };
}
is_deeply([ sort keys %old ], [ sort keys %{ $m->{expect} } ], 'a request per line');

# one stored body bills another amount than today's pricing would
my $late = "$m->{subs}{flat_late}{id}|fee";
$old{$late}{body} =~ s/&amount=2100&/&amount=2099&/ or die;
my %want = map { $_ => [ @{ $m->{expect}{$_} } ] } keys %{ $m->{expect} };
$want{$late}[0] = 2099;
for my $k (keys %old) {
    $r->cmd('HSET', 'apimon:bill:202601', $k, encode_json({ state => 'computed',
        key => $old{$k}{key}, body => $old{$k}{body}, item => '', error => '',
        updated_ms => '1767225600000' }));
}
# and since then bob's lines would go to another customer
$r->set_customer('developer', 'bob@example.com', 'cus_bob2', 1767225600000);

$run = run_agent(env => $env, args => ['bill', @period, '--create-invoices',
    '--report', "$dir/report.jsonl"]);
is($run->{rc}, 0, 'exit 0: the old entries are posted') or diag $run->{err};
like($run->{err}, qr/posted \S+ fee: 2099 usd to cus_bob as ii_/,
    'the log names the stored amount, currency and customer');

my $got = items_by_line($stripe);
is_deeply({ map { $_ => [ @{ $got->{$_} }[0, 1] ] } keys %$got }, \%want,
    'every line posted once, as its stored body says');
is($got->{$late}[2]{customer}, 'cus_bob', 'to the stored customer');
my $n = $stripe->key_counts;
is_deeply([ grep { $n->{$_} > 1 } keys %$n ], [], 'no key stored twice');

open my $f, '<', "$dir/report.jsonl" or die;
my @rows = map { decode_json($_) } <$f>;
close $f;
my %row = map { ("$_->{subscription}|$_->{line}" => $_) } grep { $_->{subscription} } @rows;
for my $k (sort keys %want) {
    is_deeply([ @{ $row{$k} }{qw(amount currency status)} ], [ @{ $want{$k} }, 'posted' ],
        "report: $k amount and currency from its entry");
}
is($row{$late}{customer}, 'cus_bob', 'report: the stored customer');

my %total;
for my $k (keys %want) {
    $total{ $got->{$k}[2]{customer} } += $want{$k}[0];
}
my %inv = map { ($_->{customer} => $_) } grep { ($_->{line} // '') eq 'invoice' } @rows;
is_deeply([ sort keys %inv ], [ sort keys %total ], 'an invoice per stored customer');
for my $c (sort keys %total) {
    is($inv{$c}{amount}, $total{$c}, "invoice of $c: the total of its entries");
}

# the entries now carry what they bill
my %led = @{ $r->cmd('HGETALL', 'apimon:bill:202601') };
my $l = decode_json($led{$late});
is_deeply([ @$l{qw(state customer amount currency)} ], [ 'done', 'cus_bob', '2099', 'usd' ],
    'the rewritten entry carries customer, amount and currency');

done_testing;
