#!/usr/bin/perl
# Management API: custom attributes in Apigee's shape ([{"name", "value"}]) on
# developers, app groups and subscriptions, set at create and update and
# returned on read, with their limits (18; names 1-255 bytes, unique; values
# up to 2048 bytes); an owner's status (inactive: no purchase), read-only
# and not-kept Apigee owner fields.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Redis::catalog_fixture());
my $n = Apimon::Admin::start_nginx($r, admin => 'apimon_admin_body_max 65536;');
my $api = Apimon::Admin->new(nginx => $n);
*problem_ok = \&Apimon::Admin::problem_ok;
my $DEV = '/developers/ann@example.com';

my $A = [ { name => 'category', value => 'gold' }, { name => 'plan type', value => 'prepaid' } ];

# --- developers
my $res = $api->post('/developers', { email => 'ann@example.com', attributes => $A });
is($res->{status}, 201, 'developer with attributes');
is_deeply($res->{json}{attributes}, $A, 'create: the attributes answered');
is($res->{json}{status}, 'active', 'a new developer is active');
is_deeply($api->get($DEV)->{json}{attributes}, $A, 'GET: the attributes, in order');
is_deeply($api->post('/developers', { email => 'bob@example.com' })->{json}{attributes}, [], 'none: []');
is_deeply($api->get('/developers')->{json}{developer}[0]{attributes}, $A, 'the list shows them');
my $B = [ { name => 'category', value => 'silver' } ];
is_deeply($api->put($DEV, { attributes => $B })->{json}{attributes}, $B, 'PUT replaces the list');
is_deeply($api->put($DEV, { firstName => 'Ann' })->{json}{attributes}, $B, 'a PUT without attributes keeps them');
is_deeply($api->put($DEV, { attributes => [] })->{json}{attributes}, [], 'PUT [] clears them');
# a fetched record sent back
my $got = $api->get($DEV)->{json};
$got->{developerId} = 'whatever';
is($api->put($DEV, $got)->{status}, 200, 'a fetched record (with developerId, read-only) sent back');

# limits
my @max = map { { name => "a$_", value => 'v' x 2048 } } 1 .. 18;
$res = $api->put($DEV, { attributes => \@max });
is($res->{status}, 200, '18 attributes of 2048 bytes: taken');
is(scalar @{ $res->{json}{attributes} }, 18, 'all 18 returned');
is(length $res->{json}{attributes}[17]{value}, 2048, 'values whole');
my $ver = $api->get($DEV)->{headers}{etag};
for my $c ([ [ @max, { name => 'a19', value => '' } ], qr/^attributes: at most 18 attributes$/, '19 attributes' ],
           [ [ { name => 'x' x 256, value => '' } ], qr/^attributes\[0\]\.name: must be a string of 1 to 255 bytes$/, 'a name of 256 bytes' ],
           [ [ { name => '', value => '' } ], qr/^attributes\[0\]\.name: must be a string of 1 to 255 bytes$/, 'an empty name' ],
           [ [ { name => 'a', value => 'v' x 2049 } ], qr/^attributes\[0\]\.value: must be a string of at most 2048 bytes$/, 'a value of 2049 bytes' ],
           [ [ { name => 'a', value => 1 } ], qr/^attributes\[0\]\.value: must be a string/, 'a number value' ],
           [ [ { name => 'a', value => 'x' }, { name => 'a', value => 'y' } ], qr/^attributes\[1\]\.name: duplicate attribute a$/, 'a repeated name' ],
           [ [ { name => 'a', value => 'x', type => 's' } ], qr/^attributes\[0\]\.type: unknown field$/, 'another member' ],
           [ { name => 'a' }, qr/^attributes: must be an array/, 'an object' ],
           [ 'a=1', qr/^attributes: must be an array/, 'a string' ]) {
    problem_ok($api->put($DEV, { attributes => $c->[0] }), 400, $c->[1], $c->[2]);
}
is($api->get($DEV)->{headers}{etag}, $ver, 'the refusals changed nothing');
is(scalar @{ $api->get($DEV)->{json}{attributes} }, 18, 'still the 18');

problem_ok($api->put($DEV, { apps => [ 'app1' ] }), 400, qr/^apps: not supported \(an Apigee field apimon does not keep\)$/,
           'apps: refused by name');
problem_ok($api->put($DEV, { organizationName => 'o' }), 400, qr/^organizationName: not supported/, 'organizationName');

# --- app groups
$res = $api->post('/appgroups', { name => 'team-a', attributes => $B, appGroupId => 'x' });
is($res->{status}, 201, 'app group with attributes (appGroupId read-only)');
is_deeply($api->get('/appgroups/team-a')->{json}{attributes}, $B, 'app group: GET');
problem_ok($api->put('/appgroups/team-a', { channelUri => 'u' }), 400, qr/^channelUri: not supported/, 'app group: channelUri');

# --- subscriptions
$res = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze', attributes => $A });
is($res->{status}, 201, 'purchase with attributes');
is_deeply($res->{json}{attributes}, $A, 'purchase: answered');
my $s = $res->{json};
my $base = "$DEV/subscriptions/$s->{name}";
is_deeply($api->get($base)->{json}{attributes}, $A, 'subscription GET');
is_deeply($api->get("$DEV/subscriptions")->{json}{developerSubscriptions}[0]{attributes}, $A, 'subscription list');
problem_ok($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze', attributes => [ {} ] }),
           400, qr/^attributes\[0\]\.name: must be a string/, 'purchase: a bad attribute');
is($r->cmd('SCARD', 'apimon:subs'), 1, 'the refused purchase made nothing');

my $e = $api->get($base)->{headers}{etag};
$res = $api->put($base, { attributes => $B }, headers => { 'If-Match' => $e });
is($res->{status}, 200, 'PUT subscription attributes');
is_deeply($res->{json}{attributes}, $B, 'PUT: answered');
is_deeply($api->get($base)->{json}{attributes}, $B, 'PUT: stored');
problem_ok($api->put($base, { attributes => $A }, headers => { 'If-Match' => $e }), 412, qr/^If-Match/, 'PUT subscription: stale If-Match');
is_deeply($api->get($base)->{json}{attributes}, $B, 'stale PUT: unchanged');
$got = $api->get($base)->{json};
is($api->put($base, $got)->{status}, 200, 'a fetched subscription sent back');
problem_ok($api->put($base, { %$got, state => 'suspended' }), 400, qr/^state: cannot be changed \(use :activate/, 'PUT state: refused');
problem_ok($api->put($base, { plan => 'weather-gold' }), 400, qr/^plan: cannot be changed/, 'PUT plan: refused');
problem_ok($api->put($base, { color => 'red' }), 400, qr/^color: unknown field$/, 'PUT: unknown field');
is($api->get($base)->{json}{state}, 'active', 'still active');
my @audit = grep { /subscription\.update/ } map { join ' ', @{ $_->[1] } } @{ $r->cmd('XRANGE', 'apimon:audit', '-', '+') };
ok(scalar @audit >= 2, 'PUT subscription: audited');

# --- owner status
$res = $api->put($DEV, { status => 'inactive' });
is($res->{json}{status}, 'inactive', 'developer made inactive');
problem_ok($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' }), 409,
           qr/^developer ann\@example.com is inactive: it cannot purchase$/, 'an inactive developer cannot purchase');
is($r->cmd('SCARD', 'apimon:subs'), 1, 'nothing bought');
is($api->call($s->{primary})->{status}, 200, 'its existing subscription goes on');
is($api->put($DEV, { status => 'active' })->{json}{status}, 'active', 'active again');
is($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' })->{status}, 201, 'and it can purchase');
done_testing();
