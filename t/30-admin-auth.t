#!/usr/bin/perl
# Management API: bearer tokens (named, bare, missing, wrong, no token file),
# organization and path routing, 405 with Allow, problem+json answers.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Redis::catalog_fixture());

my $portal = 'portal-token-0123456789abcdef';
my $ops = 'ops-token-fedcba9876543210xyz';
my $n = Apimon::Admin::start_nginx($r, tokens => <<"TOKENS");
# management API tokens
portal:$portal

   ops:$ops\r
TOKENS
my $api = Apimon::Admin->new(nginx => $n, token => $portal);

*problem_ok = \&Apimon::Admin::problem_ok;

# --- tokens
my $res = $api->get('/apiproducts');
is($res->{status}, 200, 'named token accepted');
is($res->{headers}{'cache-control'}, 'no-store', 'answers are not cached');
is($api->get('/apiproducts', undef, token => $ops)->{status}, 200, 'second token (CRLF, spaces) accepted');

$res = $api->get('/apiproducts', undef, token => undef);
problem_ok($res, 401, qr/bearer token/, 'no Authorization');
is($res->{headers}{'www-authenticate'}, 'Bearer realm="apimon"', 'WWW-Authenticate');
problem_ok($api->get('/apiproducts', undef, token => $portal . 'x'), 401, qr/bearer token/, 'wrong token');
problem_ok($api->get('/apiproducts', undef, token => substr($portal, 0, -1)), 401, qr/bearer token/, 'token prefix');
problem_ok($api->get('/apiproducts', undef, token => "portal:$portal"), 401, qr/bearer token/, 'name:token is not a token');
$res = $api->get('/apiproducts', undef, token => undef, headers => { Authorization => "Basic $portal" });
is($res->{status}, 401, 'Basic scheme refused');
$res = $api->get('/apiproducts', undef, token => undef, headers => { Authorization => "bearer $portal" });
is($res->{status}, 200, 'scheme is case-insensitive');

# a token never reaches the log
$n->stop;
# (nginx's own debug lines echo request headers; apimon's lines must not)
my $log = Apimon::Admin::own_log($n);
like($log, qr/apimon admin: wrong bearer token/, 'a wrong token is logged (info)');
unlike($log, qr/\Q$portal\E|\Q$ops\E/, 'tokens are not logged');

# --- a bare token is named "admin"; the audit says who
my $bare = 'bare-token-abcdefghijklmnop';
$n = Apimon::Admin::start_nginx($r, tokens => "$bare\n");
$api = Apimon::Admin->new(nginx => $n, token => $bare);
$res = $api->post('/developers', { email => 'who@example.com' });
is($res->{status}, 201, 'bare token accepted');
my $a = $api->get('/audit')->{json}{entries};
is($a->[-1]{who}, 'admin', 'bare token is named admin in the audit');
is($a->[-1]{addr}, '127.0.0.1', 'client address in the audit');
$n->stop;

# --- no token file: everything is refused
$n = Apimon::Admin::start_nginx($r, tokens => undef);
$api = Apimon::Admin->new(nginx => $n, token => $portal);
problem_ok($api->get('/apiproducts'), 403, qr/apimon_admin_token_file/, 'no token file');
problem_ok($api->post('/developers', { email => 'x@example.com' }), 403, qr/token/, 'no token file, POST');
$n->stop;

# --- an empty token file: every request is 401
$n = Apimon::Admin::start_nginx($r, tokens => "# nobody\n");
$api = Apimon::Admin->new(nginx => $n, token => $portal);
is($api->get('/apiproducts')->{status}, 401, 'empty token file: 401');
$n->stop;

# --- bad token files stop nginx from starting
for my $case ([ "short:abc\n", qr/at least 16 characters/ ],
              [ "bad name:0123456789abcdefgh\n", qr/token name must match/ ]) {
    my $bad = eval { Apimon::Admin::start_nginx($r, tokens => $case->[0]); 1 };
    ok(!$bad, 'nginx refuses a bad token file');
    like($@, $case->[1], 'the reason is given');
}

# --- routing
$n = Apimon::Admin::start_nginx($r);
$api = Apimon::Admin->new(nginx => $n);
problem_ok($api->get('//apimon/v1/organizations/other/apiproducts'), 404, qr/no such organization: other/, 'wrong org');
problem_ok($api->get('//apimon/v1/organizations/default'), 404, qr/no such resource/, 'org alone');
problem_ok($api->get('//apimon/v2/x'), 404, qr/no such resource/, 'not /v1/organizations');
problem_ok($api->get('/nothing'), 404, qr/no such resource/, 'unknown collection');
problem_ok($api->get('/developers/ann@example.com/apps'), 404, qr/no such resource/, 'unknown sub-resource');
problem_ok($api->get('/developers/not-an-email'), 404, qr/no such developer/, 'invalid email in path');
problem_ok($api->get('/developers/a@b.c/subscriptions/not-a-uuid'), 404, qr/no such subscription/, 'invalid subscription name');
is($api->get('/apiproducts/')->{status}, 200, 'trailing slash');

$res = $api->request('DELETE', '/developers/ann@example.com');
problem_ok($res, 405, qr/DELETE not allowed/, 'DELETE a developer');
is($res->{headers}{allow}, 'GET, PUT', 'Allow for a developer');
$res = $api->put('/developers', { email => 'a@b.c' });
is($res->{status}, 405, 'PUT developers');
is($res->{headers}{allow}, 'GET, POST', 'Allow for developers');
$res = $api->get('/developers/a@b.c/subscriptions/' . Apimon::Redis::new_uuid() . ':expire');
is($res->{status}, 405, 'GET an action');
is($res->{headers}{allow}, 'POST', 'Allow for an action');
$res = $api->post('/apiproducts', { name => 'x' });
is($res->{status}, 405, 'POST apiproducts (read-only catalog)');
is($res->{headers}{allow}, 'GET', 'Allow for the catalog');
is($api->request('DELETE', '/audit')->{headers}{allow}, 'GET', 'Allow for the audit');
is($api->get('/developers', undef, token => undef)->{status}, 401, 'authentication before routing');

# --- the token file is read again on reload
my $tf = $n->prefix . '/admin.tokens';
open my $fh, '>', $tf or die $!;
print $fh "rotated:rotated-token-0123456789\n";
close $fh;
ok($n->reload, 'reload');
Apimon::Admin::wait_redis($n);
is($api->get('/apiproducts')->{status}, 401, 'after reload: the old token is refused');
is($api->get('/apiproducts', undef, token => 'rotated-token-0123456789')->{status}, 200, 'the new one works');
$n->stop;

# --- nginx's own access rules apply on top
$n = Apimon::Admin::start_nginx($r, admin => 'deny all;');
$api = Apimon::Admin->new(nginx => $n);
is($api->get('/apiproducts')->{status}, 403, 'deny all: refused before the token is even checked');
$n->stop;

# --- the organization is configurable
$n = Apimon::Admin::start_nginx($r, admin => 'apimon_organization acme;');
$api = Apimon::Admin->new(nginx => $n);
is($api->get('//apimon/v1/organizations/acme/apiproducts')->{status}, 200, 'apimon_organization acme');
is($api->get('/apiproducts')->{status}, 404, 'default is then another organization');
$n->stop;
is_deeply([ $n->alerts ], [], 'no alerts');

done_testing;
