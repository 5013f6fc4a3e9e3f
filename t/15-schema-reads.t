#!/usr/bin/perl
# Management reads (owner_list, subscription_list, subscription_usage) and
# the audit stream written by the provisioning scripts.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Apimon::Redis;

my $r = Apimon::Redis->start;
*ms = \&Apimon::Redis::ms_utc;
my $J = JSON::PP->new->canonical;
my $T = ms('2027-02-01T09:00');
sub fails { my $code = shift; return eval { $code->(); 1 } ? 'no error' : $@ }
$r->apply_catalog(Apimon::Redis::catalog_fixture());

# --- owner_list: pages in name order
$r->put_developer("d$_\@example.com", { firstName => "D$_" }, now => $T) for reverse 1 .. 5;
my $page = $r->run_script('owner_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer'), '', 2 ]);
is($page->[0], 'd3@example.com', 'first page: next starts at the third');
is_deeply([ map { $J->decode($_)->{email} } @$page[ 1 .. $#$page ] ], [ 'd1@example.com', 'd2@example.com' ], 'first page in order');
$page = $r->run_script('owner_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer'), 'd3@example.com', 2 ]);
is_deeply([ $page->[0], map { $J->decode($_)->{email} } @$page[ 1 .. $#$page ] ],
          [ 'd5@example.com', 'd3@example.com', 'd4@example.com' ], 'second page');
$page = $r->run_script('owner_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer'), 'd5@example.com', 2 ]);
is_deeply([ $page->[0], map { $J->decode($_)->{email} } @$page[ 1 .. $#$page ] ], [ '', 'd5@example.com' ], 'last page');
$page = $r->run_script('owner_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer'), '', 5 ]);
is($page->[0], '', 'exactly count left: no next page');
is(scalar @$page, 6, 'all five');
is_deeply($r->run_script('owner_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'appgroup'), '', 10 ]), [ '' ], 'no app groups');
like(fails(sub { $r->run_script('owner_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer'), '', 0 ]) }), qr/bad_request: count/, 'count 0');
like(fails(sub { $r->run_script('owner_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer'), '', 1001 ]) }), qr/bad_request: count/, 'count 1001');
like(fails(sub { $r->run_script('owner_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'people'), '', 1 ]) }), qr/bad_request: kind/, 'bad kind');

# --- subscription_list: an owner's subscriptions, oldest first
my @subs = map { $r->create_subscription(owner => 'd1@example.com', product => 'weather', plan => 'weather-bronze', now => ms('2027-01-01') + $_) } 1 .. 3;
$page = $r->run_script('subscription_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'd1@example.com'), '', 2 ]);
is($page->[0], $subs[2]{id}, 'next page starts at the third');
is_deeply([ map { $J->decode($_)->{id} } @$page[ 1 .. 2 ] ], [ map { $_->{id} } @subs[ 0, 1 ] ], 'oldest first');
ok(!grep({ /"k[ps]"/ } @$page[ 1 .. $#$page ]), 'no digests');
$page = $r->run_script('subscription_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'd1@example.com'), $subs[2]{id}, 2 ]);
is_deeply([ $page->[0], map { $J->decode($_)->{id} } @$page[ 1 .. $#$page ] ], [ '', $subs[2]{id} ], 'last page');
is_deeply($r->run_script('subscription_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'd2@example.com'), '', 10 ]), [ '' ], 'none');
like(fails(sub { $r->run_script('subscription_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'zz@example.com'), '', 10 ]) }), qr/not_found/, 'unknown owner');
like(fails(sub { $r->run_script('subscription_list', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'd2@example.com'), $subs[0]{id}, 10 ]) }),
     qr/bad_request: startKey/, 'startKey of another owner');

# --- subscription_usage: per day per API, across months
my $s = $subs[0];
for ([ '2027-01-31T23:00', 'forecast' ], [ '2027-02-01T01:00', 'forecast' ], [ '2027-02-01T02:00', 'history' ],
     [ '2027-02-01T03:00', 'tiles' ], [ '2027-02-02', 'forecast' ]) {
    $r->check(key => $s->{primary}, api => $_->[1], now => ms($_->[0]));
}
my $u = $r->run_script('subscription_usage', [ $s->{key} ], [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'd1@example.com'), '20270131', '20270201' ]);
is_deeply($u, [ '20270131|forecast|ok', 1, '20270201|forecast|ok', 1, '20270201|history|ok', 1, '20270201|tiles|not_entitled', 1 ],
          'usage across a month boundary, sorted, day range inclusive');
is_deeply($r->run_script('subscription_usage', [ $s->{key} ], [ Apimon::Redis::mgmt_args(owner_kind => '', owner => ''), '20270202', '20270202' ]),
          [ '20270202|forecast|ok', 1 ], 'one day; empty owner kind = operator');
like(fails(sub { $r->run_script('subscription_usage', [ $s->{key} ], [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'd2@example.com'), '20270101', '20270102' ]) }),
     qr/not_found/, 'another owner: not_found');
like(fails(sub { $r->run_script('subscription_usage', [ $s->{key} ], [ Apimon::Redis::mgmt_args(owner_kind => '', owner => ''), '2027-01-01', '20270102' ]) }), qr/bad_request: from/, 'bad from');
like(fails(sub { $r->run_script('subscription_usage', [ $s->{key} ], [ Apimon::Redis::mgmt_args(owner_kind => '', owner => ''), '20270102', '20270101' ]) }), qr/bad_request: to/, 'to before from');
like(fails(sub { $r->run_script('subscription_usage', [ $s->{key} ], [ Apimon::Redis::mgmt_args(owner_kind => '', owner => ''), '20260101', '20270401' ]) }), qr/bad_request: to/, 'too long');

# --- audit: only when "who" is given
sub audit { [ map { { @{ $_->[1] } } } @{ $r->cmd('XRANGE', 'apimon:audit', '-', '+') } ] }
is_deeply(audit(), [], 'no audit without who');
my $n = sub { scalar @{ audit() } };
$r->run_script('owner_put', [], [ Apimon::Redis::mgmt_args(now => $T, who => 'admin', addr => '10.0.0.1', owner_kind => 'developer', owner => 'ann@example.com'), '{"firstName":"Ann"}', 'create' ]);
my $e = audit()->[-1];
is_deeply([ @$e{qw(ts who addr action target before)} ], [ $T, 'admin', '10.0.0.1', 'developer.create', 'ann@example.com', 'null' ],
          'developer.create entry');
is($J->decode($e->{after})->{firstName}, 'Ann', 'after = the record');
$r->run_script('owner_put', [], [ Apimon::Redis::mgmt_args(now => $T + 1, who => 'admin', owner_kind => 'developer', owner => 'ann@example.com'), '{"firstName":"Anna"}', 'update' ]);
$e = audit()->[-1];
is_deeply([ $e->{action}, $J->decode($e->{before})->{firstName}, $J->decode($e->{after})->{firstName} ],
          [ 'developer.update', 'Ann', 'Anna' ], 'developer.update: before and after');
$r->run_script('customer_set', [], [ 'developer', 'ann@example.com', 'cus_1', $T + 2, 'agent', '' ]);
is(audit()->[-1]{action}, 'developer.customer', 'developer.customer');
my $id = Apimon::Redis::new_uuid();
my $k = Apimon::Redis::new_key($id);
$r->run_script('subscription_create', [ Apimon::Redis::sub_key($id) ],
    [ Apimon::Redis::mgmt_args(now => $T, who => 'admin', addr => 'a', owner_kind => 'developer', owner => 'ann@example.com'),
      $id, 'weather', 'weather-gold', Apimon::Redis::key_digest($k), '', 0, 0 ]);
$e = audit()->[-1];
is_deeply([ @$e{qw(action target before)} ], [ 'subscription.create', $id, 'null' ], 'subscription.create');
$r->run_script('subscription_state', [ Apimon::Redis::sub_key($id) ], [ Apimon::Redis::mgmt_args(now => $T + 3, who => 'admin', addr => 'a'), 'activate' ]);
$e = audit()->[-1];
is_deeply([ $e->{action}, $J->decode($e->{before})->{state}, $J->decode($e->{after})->{state} ],
          [ 'subscription.activate', 'submitted', 'active' ], 'subscription.activate');
$r->run_script('subscription_key', [ Apimon::Redis::sub_key($id) ], [ Apimon::Redis::mgmt_args(now => $T + 4, who => 'admin', addr => 'a'), 'secondary', 'c' x 64 ]);
is(audit()->[-1]{action}, 'subscription.key.secondary', 'subscription.key.secondary');
ok(!grep({ ($_->{before} . $_->{after}) =~ /"k[ps]"|cccccccc/ } @{ audit() }), 'no digests in the audit trail');
my $before = $n->();
fails(sub { $r->run_script('subscription_state', [ Apimon::Redis::sub_key($id) ], [ Apimon::Redis::mgmt_args(now => $T + 5, who => 'admin', addr => 'a'), 'activate' ]) });
is($n->(), $before, 'refused changes are not audited');
$r->set_state($id, 'suspend');
is($n->(), $before, 'no who: not audited');

done_testing;
