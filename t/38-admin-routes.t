#!/usr/bin/perl
# Management API: every row of the route table answers its method, the
# matcher's 404s and 405s (Allow lists the methods of the rows whose path
# matched), and a problem detail that quotes the request is escaped JSON.
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
*problem_ok = \&Apimon::Admin::problem_ok;

# --- every row: its method and path, with a developer and an app group
my $DEV = '/developers/ann@example.com';
my $AG = '/appgroups/team-1';
is($api->get('/apiproducts')->{status}, 200, 'GET apiproducts');
is($api->get('/apiproducts/weather')->{status}, 200, 'GET apiproducts/{product}');
for my $o ([ '/developers', { email => 'ann@example.com' }, $DEV, { firstName => 'Ann' } ],
           [ '/appgroups', { name => 'team-1' }, $AG, { displayName => 'Team' } ]) {
    my ($list, $new, $one, $change) = @$o;
    is($api->post($list, $new)->{status}, 201, "POST $list");
    is($api->get($list)->{status}, 200, "GET $list");
    is($api->get($one)->{status}, 200, "GET $one");
    is($api->put($one, $change)->{status}, 200, "PUT $one");
    my $s = $api->post("$one/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' });
    is($s->{status}, 201, "POST $one/subscriptions");
    my $sub = "$one/subscriptions/$s->{json}{name}";
    is($api->get("$one/subscriptions")->{status}, 200, "GET $one/subscriptions");
    is($api->get($sub)->{status}, 200, 'GET .../subscriptions/{sub}');
    is($api->get("$sub/usage?from=2026-01-01&to=2026-01-02")->{status}, 200, 'GET .../{sub}/usage');
    is($api->post("$sub/keys/secondary:regenerate")->{status}, 200, 'POST .../keys/{slot}:regenerate');
    is($api->post("$sub:suspend")->{status}, 200, 'POST .../{sub}:{action}');
}
is($api->get('/audit')->{status}, 200, 'GET audit');

# --- 405: the methods of every row of that path, once each
my $sub = $api->get("$DEV/subscriptions")->{json}{developerSubscriptions}[0]{name};
for my $c ([ 'DELETE', '/appgroups', 'GET, POST' ], [ 'POST', $AG, 'GET, PUT' ],
           [ 'DELETE', "$DEV/subscriptions/$sub", 'GET, PUT' ], [ 'HEAD', "$DEV/subscriptions", 'GET, POST' ],
           [ 'GET', "$DEV/subscriptions/$sub/keys/primary:regenerate", 'POST' ],
           [ 'PUT', "$DEV/subscriptions/$sub/usage", 'GET' ], [ 'PUT', '/apiproducts/weather', 'GET' ]) {
    my ($m, $path, $allow) = @$c;
    my $res = $api->request($m, $path);
    is($res->{status}, 405, "$m $path: 405");
    is($res->{headers}{allow}, $allow, "$m $path: Allow $allow");
}

# --- 404: a named part that no row can take is named; otherwise the path
problem_ok($api->get('/appgroups/team!1'), 404, qr/^no such appgroup: team!1$/, 'app group name in the path');
problem_ok($api->get('/developers/not-an-email/subscriptions'), 404, qr/^no such developer: not-an-email$/,
           'invalid email before a valid rest');
problem_ok($api->post("$DEV/subscriptions/not-a-uuid:expire"), 404, qr/^no such subscription$/, 'invalid name before an action');
problem_ok($api->get("$DEV/subscriptions/$sub:expire/usage"), 404, qr/^no such resource/, 'an action is not a collection');
problem_ok($api->post("$DEV/subscriptions/$sub/keys/tertiary:regenerate"), 404, qr/^no such resource/, 'unknown slot');
is($api->get("$DEV/subscriptions/$sub/")->{status}, 200, 'a trailing slash is skipped');
problem_ok($api->get('/apiproducts/weather/plans'), 404, qr/^no such resource/, 'longer than any row');

# --- a detail that quotes the request is JSON-escaped
my $res = $api->post("$DEV/subscriptions/$sub:a%22b%5Cc%09d");
problem_ok($res, 400, qr/^unknown action "a"b\\c\td" \(expected /, 'quote, backslash and tab in a detail');
like($res->{content}, qr/"unknown action \\"a\\"b\\\\c\\td\\"/, 'escaped in the body');

$n->stop;
done_testing;
