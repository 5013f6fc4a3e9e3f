#!/usr/bin/perl
# Management API when Redis is slow or gone: 503 problem answers, no change
# half made, and a client that gives up while its call is in flight is safe.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::IP;
use Time::HiRes qw(time sleep);
use Apimon::Redis;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Redis::catalog_fixture());
my $n = Apimon::Admin::start_nginx($r, http => 'apimon_redis_timeout 300ms;');
my $api = Apimon::Admin->new(nginx => $n);
is($api->post('/developers', { email => 'ann@example.com' })->{status}, 201, 'Redis up: created');

# --- Redis hangs: the call times out
$r->kill_stop;
my $t0 = time;
my $res = $api->post('/developers', { email => 'bob@example.com' });
is($res->{status}, 503, 'Redis hangs: 503');
like($res->{headers}{'content-type'}, qr{^application/problem\+json}, 'problem+json');
like($res->{json}{detail}, qr/redis is unavailable/, 'detail');
ok(time - $t0 < 5, 'answered within the timeout');

# a client that gives up while its call is in flight
for my $path ('/developers', '/developers/ann@example.com/subscriptions') {
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $n->http_port) or die $!;
    my $body = '{"email": "carl@example.com", "apiproduct": "weather", "plan": "weather-free"}';
    print $s "POST $Apimon::Admin::ORG_BASE$path HTTP/1.1\r\nHost: x\r\n"
           . "Authorization: Bearer $Apimon::Admin::TOKEN\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    sleep 0.1;
    close $s;
}
sleep 0.5;
$r->kill_cont;
sleep 0.2;
is($api->get('/developers/ann@example.com')->{status}, 200, 'Redis back: served');

# --- Redis gone
$r->stop;
$res = $api->get('/developers/ann@example.com');
is($res->{status}, 503, 'Redis down: 503');
$res = $api->post('/developers/ann@example.com/subscriptions', { apiproduct => 'weather', plan => 'weather-free' });
is($res->{status}, 503, 'Redis down: purchase 503');
unlike($res->{content}, qr/ak_/, 'no key handed out for a purchase that did not happen');

$n->stop;
is_deeply([ $n->alerts ], [], 'no alerts');
unlike($n->error_log, qr/\[crit\]|segfault|exited on signal/, 'no crash');
done_testing;
