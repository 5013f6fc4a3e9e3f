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
# the transport reconnects with a backoff after a timeout: retry a while
sub eventually {
    my ($f) = @_;
    my ($res, $until) = (undef, time + 5);
    do { $res = $f->(); return $res if $res->{status} != 503; sleep 0.1 } while (time < $until);
    return $res;
}

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

$r->kill_cont;
is(eventually(sub { $api->get('/developers/ann@example.com') })->{status}, 200, 'Redis back: served');
$n->stop;

# --- a client that gives up while its call is in flight: the request ends
# (499) and its call is dropped; the late replies are ignored
$n = Apimon::Admin::start_nginx($r, admin => 'apimon_redis_timeout 5s;');
$api = Apimon::Admin->new(nginx => $n);
$r->kill_stop;
my @socks;
for my $path ('/developers', '/developers/ann@example.com/subscriptions', '/developers/ann@example.com') {
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $n->http_port) or die $!;
    my $body = $path =~ /subscriptions$/ ? '{"apiproduct": "weather", "plan": "weather-free"}'
                                         : '{"email": "carl@example.com"}';
    my $method = $path =~ /ann\@example.com$/ ? 'GET' : 'POST';
    print $s "$method $Apimon::Admin::ORG_BASE$path HTTP/1.1\r\nHost: x\r\n"
           . "Authorization: Bearer $Apimon::Admin::TOKEN\r\nContent-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    push @socks, $s;
}
sleep 0.3;
close $_ for @socks;
my $until = time + 3;
my $closed;
while (time < $until) {
    $closed = () = $n->error_log =~ /client prematurely closed connection/g;
    last if $closed >= 3;
    sleep 0.05;
}
is($closed, 3, 'each abandoned request ends at once, while Redis still hangs');
$r->kill_cont;
$res = eventually(sub { $api->get('/developers/ann@example.com') });
is($res->{status}, 200, 'Redis back: served after the dropped replies');
is($res->{json}{email}, 'ann@example.com', 'with its own answer');

# --- Redis gone
$r->stop;
$res = $api->get('/developers/ann@example.com');
is($res->{status}, 503, 'Redis down: 503');
$res = $api->post('/developers/ann@example.com/subscriptions', { apiproduct => 'weather', plan => 'weather-free' });
is($res->{status}, 503, 'Redis down: purchase 503');
unlike($res->{content}, qr/ak2?_/, 'no key handed out for a purchase that did not happen');

$n->stop;
is_deeply([ $n->alerts ], [], 'no alerts');
unlike($n->error_log, qr/\[crit\]|segfault|exited on signal/, 'no crash');
done_testing;
