#!/usr/bin/perl
# billing-agent bill: a full run's amounts for every pricing model, the
# report, the request format; a rerun posts nothing.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent setup_models items_by_line agent_env ms);
use JSON::PP;
use File::Temp qw(tempdir);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $dir = tempdir(CLEANUP => 1);
my $env = agent_env($r, $stripe);

my $run = run_agent(env => $env, args => ['bill', '--period', '2026-01',
    '--report', "$dir/report.csv", '--max-rps', '1000']);
is($run->{rc}, 0, 'exit 0: every line done') or diag $run->{err};

my $got = items_by_line($stripe);
is(scalar keys %$got, scalar keys %{ $m->{expect} }, 'one item per non-zero line');
for my $k (sort keys %{ $m->{expect} }) {
    is_deeply([ @{ $got->{$k} || [] }[0, 1] ], $m->{expect}{$k}, "amount of $k");
}

# request format
my ($it) = grep { $_->{metadata}{apimon_subscription} eq $m->{subs}{flat_late}{id} }
    $stripe->items;
is($it->{customer}, 'cus_bob', 'customer of the developer');
is($it->{period}{start}, ms('2026-01-11T15:00') / 1000, 'period start = subscription start');
is($it->{period}{end}, ms('2026-02-01') / 1000, 'period end = month end');
like($it->{description}, qr/\S/, 'a description');
like($it->{metadata}{apimon_key}, qr/^apimon-202601-$m->{subs}{flat_late}{id}-fee-v\d+$/,
    'billing key in metadata');
is($it->{metadata}{apimon_period}, '2026-01', 'period in metadata');
my @posts = grep { $_->{method} eq 'POST' } $stripe->requests;
ok(!grep({ ($_->{idempotency_key} // '') eq '' } @posts), 'every POST has an Idempotency-Key');
ok(!grep({ ($_->{stripe_version} // '') !~ /^\d{4}-\d\d-\d\d/ } $stripe->requests),
    'every request pins Stripe-Version');
is((grep { $_->{body} =~ /unit_amount|price=/ } @posts), 0, 'no unit_amount/price params');

my ($acme) = grep { $_->{customer} eq 'cus_acme' } $stripe->items;
ok($acme, 'app group subscriptions billed to the app group customer');

# report
open my $f, '<', "$dir/report.csv" or die;
my @rows = <$f>;
close $f;
like($rows[0], qr/^period,subscription,customer,owner,plan,model,line,quantity,amount,currency,status,stripe_id,error$/, 'CSV header');
my %status;
for (@rows[1 .. $#rows]) { my @c = split /,/; $status{"$c[1]|$c[6]"} = [ $c[10], $c[8], $c[11] ] }
for my $k (sort keys %{ $m->{expect} }) {
    is($status{$k}[0], 'done', "report: $k done");
    is($status{$k}[1], $m->{expect}{$k}[0], "report: $k amount");
    like($status{$k}[2], qr/^ii_/, "report: $k stripe id");
}
is($status{"$m->{subs}{metered_zero}{id}|usage"}[0], 'zero', 'zero line reported, not pushed');
my $nb = (keys %{ $m->{not_billed} })[0];
is($status{"$nb|after_end"}[0], 'not_billed', 'usage after the end reported');
like($run->{err}, qr/7 calls outside its term/, 'and logged');

# the ledger holds done lines with the Stripe ids
for my $k (sort keys %{ $m->{expect} }) {
    my $l = decode_json($r->cmd('HGET', 'apimon:bill:202601', $k));
    is($l->{state}, 'done', "ledger $k done");
    is($l->{item}, $got->{$k}[2]{id}, "ledger $k item id");
}
is($r->cmd('EXISTS', 'apimon:bill:lock'), 0, 'lock released');

# a rerun posts nothing
my $n = () = $stripe->requests;
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01',
    '--report', "$dir/again.jsonl"]);
is($run->{rc}, 0, 'rerun: exit 0') or diag $run->{err};
my @new = ($stripe->requests)[$n .. scalar($stripe->requests) - 1];
is((grep { $_->{method} eq 'POST' } @new), 0, 'rerun: no POST at all');
is(scalar($stripe->items), scalar keys %{ $m->{expect} }, 'rerun: no new item');
open $f, '<', "$dir/again.jsonl" or die;
my @j = map { decode_json($_) } <$f>;
is((grep { $_->{status} eq 'done' } @j), scalar keys %{ $m->{expect} }, 'rerun report (JSON lines): all done');

# a dry run prints what is left: nothing
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--dry-run']);
is($run->{rc}, 0, 'dry run after done: exit 0');
is($run->{out}, '', 'dry run after done: no request to print');

done_testing;
