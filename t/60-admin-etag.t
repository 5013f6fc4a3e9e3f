#!/usr/bin/perl
# Management API: an ETag on every resource; If-Match on updates, actions and
# key regeneration is judged by the script that makes the change: a stale one
# is 412 problem+json and nothing changed. Bodies must be JSON (415).
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Redis::catalog_fixture());
my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);
my $DEV = '/developers/ann@example.com';

sub etag { my ($res) = @_; return $res->{headers}{etag} // '' }

# --- ETags: on reads and on the answers of changes; a change moves it
my $res = $api->post('/developers', { email => 'ann@example.com' });
is($res->{status}, 201, 'developer created');
like(etag($res), qr/^"\d+"$/, 'created: an ETag');
ok(!exists $res->{json}{ver}, 'the version is not a member of the resource');
my $e1 = etag($api->get($DEV));
is($e1, etag($res), 'GET: the same ETag');
$res = $api->put($DEV, { firstName => 'Ann' }, headers => { 'If-Match' => $e1 });
is($res->{status}, 200, 'PUT with the current ETag: 200');
my $e2 = etag($res);
isnt($e2, $e1, 'the change moved the ETag');
is(etag($api->get($DEV)), $e2, 'GET shows the new one');

# a stale If-Match: 412, nothing changed, no audit entry
my $audit = $r->cmd('XLEN', 'apimon:audit');
$res = $api->put($DEV, { firstName => 'Bob' }, headers => { 'If-Match' => $e1 });
Apimon::Admin::problem_ok($res, 412, qr/^If-Match: the developer has changed \(its ETag is \Q$e2\E\)/, 'stale If-Match on PUT');
is($api->get($DEV)->{json}{firstName}, 'Ann', 'stale PUT: unchanged');
is(etag($api->get($DEV)), $e2, 'stale PUT: same ETag');
is($r->cmd('XLEN', 'apimon:audit'), $audit, 'stale PUT: no audit entry');
is($api->put($DEV, { firstName => 'Bo' }, headers => { 'If-Match' => "\"nope\", $e2" })->{status}, 200,
   'a list holding the current ETag matches');
is($api->put($DEV, { lastName => 'Lee' }, headers => { 'If-Match' => '*' })->{status}, 200, 'If-Match: * matches');
my $cur = etag($api->get($DEV));
is($api->put($DEV, { lastName => 'X' }, headers => { 'If-Match' => "W/$cur" })->{status}, 412,
   'a weak ETag never matches (strong comparison)');
Apimon::Admin::problem_ok($api->put('/developers/nobody@example.com', { firstName => 'x' },
                                    headers => { 'If-Match' => '"1"' }),
                          404, qr/no such developer/, 'If-Match on a missing developer: 404');

# app groups too
$res = $api->post('/appgroups', { name => 'team-a' });
my $ag = etag($res);
like($ag, qr/^"\d+"$/, 'app group: an ETag');
is($api->put('/appgroups/team-a', { displayName => 'A' }, headers => { 'If-Match' => '"99"' })->{status}, 412,
   'app group: stale If-Match: 412');
is($api->get('/appgroups/team-a')->{json}{displayName}, '', 'app group: unchanged');

# products: an ETag of what is shown
my $p1 = etag($api->get('/apiproducts/weather'));
like($p1, qr/^"[0-9a-f]{40}"$/, 'apiproduct: an ETag (SHA-1 of the product)');
is(etag($api->get('/apiproducts/weather')), $p1, 'apiproduct: stable');
like(etag($api->get('/apiproducts')), qr/^"[0-9a-f]{40}"$/, 'apiproducts: an ETag');

# --- subscriptions: actions and key regeneration
$res = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' });
is($res->{status}, 201, 'purchase');
my $s = $res->{json};
my $base = "$DEV/subscriptions/$s->{name}";
my $se = etag($res);
like($se, qr/^"\d+"$/, 'purchase: an ETag');
is(etag($api->get($base)), $se, 'GET subscription: the same ETag');

$res = $api->post("$base:suspend", undef, headers => { 'If-Match' => '"0"' });
Apimon::Admin::problem_ok($res, 412, qr/^If-Match: the subscription has changed/, 'stale If-Match on :suspend');
is($api->get($base)->{json}{state}, 'active', ':suspend refused: still active');
is($api->call($s->{primary})->{status}, 200, ':suspend refused: the key still serves');

$res = $api->post("$base:suspend", undef, headers => { 'If-Match' => $se });
is($res->{status}, 200, ':suspend with the current ETag');
is($res->{json}{state}, 'suspended', ':suspend done');
my $se2 = etag($res);
isnt($se2, $se, ':suspend moved the ETag');
$res = $api->post("$base:resume", undef, headers => { 'If-Match' => $se });
is($res->{status}, 412, ':resume with the ETag before :suspend: 412');
is($api->get($base)->{json}{state}, 'suspended', ':resume refused: still suspended');
is($api->post("$base:resume", undef, headers => { 'If-Match' => $se2 })->{status}, 200, ':resume with the current one');
my $se3 = etag($api->get($base));

# usage counted by the check does not move the ETag
is($api->call($s->{primary})->{status}, 200, 'a call');
is(etag($api->get($base)), $se3, 'calls do not move the ETag');

$res = $api->post("$base/keys/primary:regenerate", undef, headers => { 'If-Match' => $se2 });
Apimon::Admin::problem_ok($res, 412, qr/^If-Match: the subscription has changed/, 'stale If-Match on :regenerate');
ok(!exists $res->{json}{primary}, ':regenerate refused: no key in the answer');
is($api->call($s->{primary})->{status}, 200, ':regenerate refused: the old key still serves');
is(etag($api->get($base)), $se3, ':regenerate refused: same ETag');
$res = $api->post("$base/keys/primary:regenerate", undef, headers => { 'If-Match' => $se3 });
is($res->{status}, 200, ':regenerate with the current ETag');
is($api->call($res->{json}{primary})->{status}, 200, 'the new key serves');
is($api->call($s->{primary})->{status}, 401, 'the old one is refused');

# --- 415: a body must be JSON
for my $ct ('text/plain', 'application/x-www-form-urlencoded', undef) {
    my %h = defined $ct ? ('Content-Type' => $ct) : ();
    my $name = 'Content-Type ' . ($ct // 'absent');
    my $http = HTTP::Tiny->new(timeout => 10);
    my $raw = $http->request('POST', $api->url('/developers'),
        { headers => { Authorization => "Bearer $Apimon::Admin::TOKEN", %h },
          content => '{"email": "carl@example.com"}' });
    my $res = { status => $raw->{status}, headers => $raw->{headers},
                json => eval { JSON::PP->new->decode($raw->{content}) } };
    Apimon::Admin::problem_ok($res, 415, qr/^Content-Type: the body must be application\/json/, "$name: 415");
}
is($r->cmd('EXISTS', 'apimon:developer:carl@example.com'), 0, '415: nothing created');
for my $ct ('application/json; charset=utf-8', 'APPLICATION/JSON', 'application/merge-patch+json') {
    my $res = $api->put($DEV, { userName => 'ann' }, headers => { 'Content-Type' => $ct });
    is($res->{status}, 200, "Content-Type $ct: taken");
}
is($api->post("$base:suspend")->{status}, 200, 'an action without a body needs no Content-Type');

unlike(Apimon::Admin::own_log($n), qr/\[(alert|emerg)\]/, 'no alerts');
done_testing();
