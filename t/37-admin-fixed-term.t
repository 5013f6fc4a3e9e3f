#!/usr/bin/perl
# Management API: a purchase with endTime is a fixed-term subscription. Its
# keys are refused from that instant on (as for an expired one), and the
# billing agent pro-rates its fee to it: purchase through the API, bill the
# month against the Stripe-compatible server, check the amount.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);
use Apimon::Redis;
use Apimon::Admin;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent agent_env ms);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Redis::catalog_fixture());
my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);
my $DEV = '/developers/ann@example.com';
is($api->post('/developers', { email => 'ann@example.com', customer => 'cus_ann' })->{status}, 201, 'developer');

# --- enforcement: served until endTime, refused from then on
my $end = int(time * 1000) + 1500;
my $res = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze', endTime => "$end" });
is($res->{status}, 201, 'purchase with endTime: 201');
my $s = $res->{json};
is($s->{endTime}, "$end", 'endTime in the answer');
is($s->{state}, 'active', 'active');
is($api->get("$DEV/subscriptions/$s->{name}")->{json}{endTime}, "$end", 'endTime in the view');
is($r->cmd('HGET', Apimon::Redis::sub_key($s->{name}), 'endTime'), $end, 'endTime stored');
is($api->call($s->{primary})->{status}, 200, 'before endTime: served');
sleep 0.05 while time * 1000 < $end + 20;
$res = $api->call($s->{primary});
is($res->{status}, 403, 'after endTime: refused');
like($res->{content}, qr/inactive/, 'after endTime: inactive, as an expired one');
is($api->call($s->{secondary})->{status}, 403, 'after endTime: the secondary key too');

# cancelling a fixed-term subscription keeps an earlier endTime
my $f = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze',
                                           startTime => ms('2026-01-01'), endTime => ms('2026-02-01') })->{json};
is($f->{endTime}, ms('2026-02-01'), 'a term in the past: endTime as given');
is($api->call($f->{primary})->{status}, 403, 'a term in the past: refused at once');
is($api->post("$DEV/subscriptions/$f->{name}:cancel")->{json}{endTime}, ms('2026-02-01'), 'cancel keeps the earlier end');

# --- billing: a term from the 10th 12:00 to the 20th 06:00 of November 2026
# (30 days): 11 active days of 29.00 USD, 2900 x 11 / 30 = 1063.33 -> 1063
my $b = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze',
                                           startTime => ms('2026-11-10T12:00'), endTime => ms('2026-11-20T06:00') });
is($b->{status}, 201, 'fixed-term purchase in November');
$b = $b->{json};

my $stripe = Apimon::Stripe->start;
my $dir = tempdir(CLEANUP => 1);
my $run = run_agent(env => agent_env($r, $stripe),
                    args => [ 'bill', '--period', '2026-11', '--report', "$dir/report.csv" ]);
is($run->{rc}, 0, 'bill 2026-11: exit 0') or diag $run->{err};
my @items = grep { ($_->{metadata}{apimon_subscription} // '') eq $b->{name} } $stripe->items;
is(scalar @items, 1, 'one item');
is(scalar($stripe->items), 1, 'and none for the other terms, outside November');
is($items[0]{amount}, 1063, 'the fee is pro-rated to endTime: 11 of 30 days');
is($items[0]{customer}, 'cus_ann', 'billed to the developer');
is($items[0]{period}{start}, ms('2026-11-10T12:00') / 1000, 'item period starts at startTime');
is($items[0]{period}{end}, ms('2026-11-20T06:00') / 1000, 'item period ends at endTime');

$n->stop;
is_deeply([ $n->alerts ], [], 'no alerts');
done_testing;
