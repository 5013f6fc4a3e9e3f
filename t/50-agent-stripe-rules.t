#!/usr/bin/perl
# What the end customer and the API see of a line: a well-formed
# reconciliation query, descriptions led by the plan's display name, exact
# integers in the JSON report, the real reason of a subscription left
# unpriced, and amounts Stripe accepts in its special currencies
# (three-decimal: last digit 0; ISK and UGX: whole units, x100).
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use JSON::PP;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent agent_env ms items_by_line);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $dir = tempdir(CLEANUP => 1);
my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $env = agent_env($r, $stripe);
my $t0 = ms('2025-12-01');

my $catalog = {
    products => [ { name => 'geo', displayName => 'Geo API', apis => ['lookup'] } ],
    plans => [
        { name => 'geo-flat', product => 'geo', displayName => 'Flat Rate',
          pricing => { model => 'flat', currency => 'usd', amount => 3100 } },
        { name => 'geo-huge', product => 'geo', displayName => 'Huge',
          pricing => { model => 'metered', currency => 'usd', unitAmount => 999999999999 } },
        { name => 'geo-kwd', product => 'geo',
          pricing => { model => 'flat', currency => 'kwd', amount => 10000 } },
        { name => 'geo-isk', product => 'geo', displayName => 'Iceland',
          pricing => { model => 'flat', currency => 'isk', amount => 100000 } },
        { name => 'geo-ugx', product => 'geo', displayName => 'Uganda',
          pricing => { model => 'flat', currency => 'ugx', amount => 500000 } },
    ],
};
my $js = JSON::PP->new->canonical;
$r->apply_catalog($js->encode($catalog), $t0);

my %sub;
for my $o ([ann => 'geo-flat'], [bob => 'geo-huge'], [kim => 'geo-kwd'],
           [isa => 'geo-isk'], [uma => 'geo-ugx'], [max => 'geo-huge'])
{
    my ($who, $plan) = @$o;
    $r->put_developer("$who\@example.com", { firstName => $who, lastName => 'X',
        userName => $who }, now => $t0);
    $r->set_customer('developer', "$who\@example.com", "cus_$who", $t0);
    # 21 of January's 31 days
    $sub{$who} = $r->create_subscription(owner => "$who\@example.com",
        product => 'geo', plan => $plan, now => ms('2026-01-11T15:00'),
        start => ms('2026-01-11T15:00'));
}
# usage written as the module stores it: one day's accepted calls
sub usage {
    my ($who, $calls) = @_;
    $r->cmd('HSET', "apimon:sub:{$sub{$who}{id}}:usage:202601",
        '20260115|lookup|ok', $calls);
}
usage(bob => 9223372);                 # 999999999999 x 9223372 > 2^53
usage(max => 1000000000000001);        # more than 10^15 calls: not priced

# --- the JSON report: exact integers, and the reason for max
my $run = run_agent(env => $env, args => ['bill', '--period', '2026-01',
    '--dry-run', '--report', "$dir/dry.jsonl"]);
is($run->{rc}, 1, 'dry run: exit 1 (one subscription not priced)') or diag $run->{err};
open my $f, '<', "$dir/dry.jsonl" or die;
my @raw = <$f>;
close $f;
my ($bob) = grep { /"subscription":"\Q$sub{bob}{id}\E"/ } @raw;
like($bob, qr/"amount":9223371999990776628,/, 'JSON report: the amount exactly (not a double)');
like($bob, qr/"quantity":9223372,/, 'JSON report: the quantity as an integer');
my @rows = map { decode_json($_) } @raw;
my ($mx) = grep { $_->{subscription} eq $sub{max}{id} } @rows;
is($mx->{status}, 'failed', 'unpriced subscription: failed');
is($mx->{line}, 'subscription', 'unpriced subscription: a subscription row, not after_end');
like($mx->{error}, qr/^plan geo-huge: 1000000000000001 accepted calls in one period: more than 10\^15/,
    'unpriced subscription: the real reason');
like($run->{err}, qr/subscription \Q$sub{max}{id}\E: not priced: plan geo-huge: 1000000000000001/,
    'unpriced subscription: the reason logged');

# --- the real run (without the two usd giants: a customer has one currency)
# ann alone first: her POST's outcome is unknown (500 after the store), so
# the agent lists her items to find it
$r->cmd('SREM', 'apimon:subs', map { $sub{$_}{id} } qw(bob max kim isa uma));
$stripe->fault('500_after_store', count => 1);
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01']);
is($run->{rc}, 0, 'ann: exit 0') or diag $run->{err};
$r->cmd('SADD', 'apimon:subs', map { $sub{$_}{id} } qw(kim isa uma));
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01']);
is($run->{rc}, 0, 'special currencies: exit 0') or diag $run->{err};
my @gets = grep { $_->{method} eq 'GET' && $_->{path} eq '/v1/invoiceitems' } $stripe->requests;
my @listings = grep { ($_->{query} // '') =~ /customer=/ } @gets;
ok(@listings >= 1, 'the unknown outcome was reconciled by a listing');
is(scalar(grep { $_->{status} != 200 } @gets), 0, 'every listing answered 200');
is(scalar(grep { ($_->{query} // '') !~ /^[^&=]+=[^&]*(?:&[^&=]+=[^&]*)*$/ } @gets), 0,
    'every query well formed (no empty field)') or diag explain [map { $_->{query} } @gets];
like($listings[0]{query}, qr/^customer=cus_[a-z]+&limit=100$/, 'the listing: customer and limit, nothing empty');

my $got = items_by_line($stripe);
my $it = $got->{"$sub{ann}{id}|fee"};
is($it->[0], 2100, 'usd: 21 of 31 days of 31.00');
like($it->[2]{description}, qr/^Flat Rate \(geo-flat\) 2026-01: 21 of 31 days$/,
    'description: the display name, then the plan id');
like($got->{"$sub{kim}{id}|fee"}[2]{description}, qr/^geo-kwd 2026-01: /,
    'no display name: the plan id alone');

# 10.000 kwd x 21 / 31 = 6.774 → 6.770; 1,000 isk x 21/31 = 677.42 → 677;
# 5,000 ugx x 21/31 = 3,387.10 → 3,387
is($got->{"$sub{kim}{id}|fee"}[0], 6770, 'kwd: rounded to the nearest ten');
is($got->{"$sub{isa}{id}|fee"}[0], 67700, 'isk: whole kronur (x100)');
is($got->{"$sub{uma}{id}|fee"}[0], 338700, 'ugx: whole shillings (x100)');
is(scalar(grep { $_->{status} == 400 } grep { $_->{method} eq 'POST' } $stripe->requests), 0,
    'no line refused by the API');

# --- catalog apply refuses a price Stripe would refuse
for my $c ([kwd => 10005, 10], [isk => 150050, 100], [ugx => 50, 100]) {
    my ($cur, $amount, $step) = @$c;
    my $bad = $js->decode($js->encode($catalog));
    $bad->{plans}[2]{pricing} = { model => 'flat', currency => $cur, amount => $amount };
    open my $g, '>', "$dir/bad.json" or die;
    print $g $js->encode($bad);
    close $g;
    $run = run_agent(env => $env, args => ['catalog', 'apply', "$dir/bad.json"]);
    is($run->{rc}, 2, "catalog apply: $amount $cur refused");
    like($run->{err}, qr/plans\[2\]\.pricing\.amount: must be a multiple of $step in $cur/,
        "... naming the field and the step ($cur)");
}

# --- times the agent cannot read (written directly into the subscription
# hash, as an older management API let them through): reported with the
# reason, exit 1, and never priced; the others are
{
    my $r2 = Apimon::Redis->start;
    $r2->apply_catalog($js->encode($catalog), $t0);
    my %bad = (ok => undef, digits19 => [startTime => '1767225600000000000'],
        overflow => [startTime => '9223372036854775807'],
        text => [startTime => 'yesterday'], negative => [endTime => '-5'],
        float => [endTime => '1.7e+15'], nostart => [startTime => undef],
        epoch => [startTime => '5']);
    my %id;
    for my $k (sort keys %bad) {
        $r2->put_developer("$k\@example.com", { firstName => $k, lastName => 'X',
            userName => $k }, now => $t0);
        $r2->set_customer('developer', "$k\@example.com", "cus_$k", $t0);
        my $s = $r2->create_subscription(owner => "$k\@example.com", product => 'geo',
            plan => 'geo-flat', now => ms('2026-01-11T15:00'), start => ms('2026-01-11T15:00'));
        $id{$k} = $s->{id};
        next unless $bad{$k};
        my ($field, $v) = @{ $bad{$k} };
        if (defined $v) { $r2->cmd('HSET', $s->{key}, $field, $v) }
        else { $r2->cmd('HDEL', $s->{key}, $field) }
    }
    my $run = run_agent(env => agent_env($r2, $stripe), args => ['bill', '--period', '2026-01',
        '--dry-run', '--report', "$dir/times.jsonl"]);
    is($run->{rc}, 1, 'unreadable times: exit 1') or diag $run->{err};
    open my $f, '<', "$dir/times.jsonl" or die;
    my %row = map { my $j = decode_json($_); ("$j->{subscription}|$j->{line}" => $j) } <$f>;
    close $f;
    is($row{"$id{ok}|fee"}{amount}, 2100, 'the readable subscription is priced');
    my %why = (digits19 => qr/^startTime "1767225600000000000" is not a time in ms from 946684800000 \(2000-01-01\) to 253402300799999 \(9999-12-31T23:59:59.999Z\)/,
        overflow => qr/^startTime "9223372036854775807" is not a time/,
        text => qr/^startTime "yesterday" is not a time/,
        negative => qr/^endTime "-5" is not a time/, float => qr/^endTime "1.7e\+15" is not a time/,
        nostart => qr/^startTime is missing/, epoch => qr/^startTime "5" is not a time/);
    for my $k (sort keys %why) {
        my $row = $row{"$id{$k}|subscription"};
        is($row && $row->{status}, 'failed', "$k: failed, not priced");
        like($row && $row->{error}, $why{$k}, "$k: the precise reason");
        ok(!$row{"$id{$k}|fee"}, "$k: no fee line");
    }
    unlike($run->{out}, qr/cus_(?!ok)/, 'dry run: only the readable subscription would be posted');
}

done_testing;
