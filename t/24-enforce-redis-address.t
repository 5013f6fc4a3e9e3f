#!/usr/bin/perl
# apimon_redis addresses (parsed by nginx's ngx_parse_url, without resolving):
# numeric IPv4 and IPv6 with or without a port, unix: sockets; host names,
# bad ports, paths and empty parts are refused naming the directive; the
# address the module connects to is the one configured.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $key = Apimon::Nginx::subscribe($r, 'open')->{primary};
my $loc = "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://backend; }\n";

my @bad = (
    [ 'example.com', qr/needs a numeric IP address or a unix: socket path, not "example\.com"/ ],
    [ '10.0.0.1.5', qr/needs a numeric IP address or a unix: socket path, not "10\.0\.0\.1\.5"/ ],
    [ '127.0.0.1:0', qr/"apimon_redis": invalid address "127\.0\.0\.1:0"/ ],
    [ '127.0.0.1:65536', qr/"apimon_redis": invalid address "127\.0\.0\.1:65536"/ ],
    [ '127.0.0.1:x', qr/"apimon_redis": invalid address "127\.0\.0\.1:x"/ ],
    [ '127.0.0.1:6379/0', qr/"apimon_redis": invalid address "127\.0\.0\.1:6379\/0"/ ],
    [ ':6379', qr/"apimon_redis": invalid address ":6379"/ ],
    [ '[::1]6379', qr/"apimon_redis": invalid address "\[::1\]6379"/ ],
    [ '[not-ipv6]:6379', qr/"apimon_redis": invalid address "\[not-ipv6\]:6379"/ ],
    [ 'unix:', qr/"apimon_redis": invalid address "unix:"/ ],
    [ 'unix:/' . ('d' x 120) . '.sock', qr/"apimon_redis": invalid address "unix:\/d+\.sock"/ ],
);
for my $case (@bad) {
    my ($addr, $want) = @$case;
    my $n = Apimon::Nginx->new(workers => 1);
    my $started = eval { $n->start(redis_conf => "apimon_redis $addr;", server => $loc); 1 };
    $n->stop if $started;
    ok(!$started, "$addr: refused");
    like($@, $want, "$addr: the message names the directive and the address");
    like($@, qr/in \S+nginx\.conf:\d+/, "$addr: with file and line");
}

# accepted: nothing listens there, so the check answers 503 and says where
for my $case ([ '[::1]', qr/redis at \[::1\]/ ], [ '127.0.0.2', qr/redis at 127\.0\.0\.2/ ],
              [ 'unix:/nonexistent/redis.sock', qr/redis at unix:\/nonexistent\/redis\.sock/ ]) {
    my ($addr, $logged) = @$case;
    my $n = Apimon::Nginx->new(workers => 1);
    ok(eval { $n->start(redis_conf => "apimon_redis $addr connect_timeout=200ms;", server => $loc); 1 },
       "$addr: accepted") or diag $@;
    is($n->get('/x/a', 'X-API-Key' => $key)->{status}, 503, "$addr: nothing there, 503");
    $n->stop;
    like($n->error_log, $logged, "$addr: the connection error names the address");
}

# the address connected to is the one configured: a real Redis on its port
my $n = Apimon::Nginx->new(workers => 1);
$n->start(redis_conf => 'apimon_redis 127.0.0.1:' . $r->port . ';', server => $loc);
is($n->get('/x/a', 'X-API-Key' => $key)->{status}, 200, '127.0.0.1:port: 200');
$n->stop;

done_testing;
