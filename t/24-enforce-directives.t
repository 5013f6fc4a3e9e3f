#!/usr/bin/perl
# Directives parsed by nginx's own slots and parsers, beyond t/24-enforce-config.t:
# apimon_redis addresses (ngx_parse_url): numeric IPv4 and IPv6 with or
# without a port, unix: sockets; names that do not resolve (host names that
# do: t/86-enforce-redis-host.t), bad ports, paths and empty parts are
# refused naming the directive; the address the module
# connects to is the one configured.  apimon_quota_status (a number slot with
# bounds), apimon_on_redis_error (an enum slot), apimon_api (a string slot
# with a check) and apimon_key: bad values and duplicates are refused.
use strict;
use warnings;
use Test::More;
use IO::Socket::IP;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $key = Apimon::Nginx::subscribe($r, 'open')->{primary};
my $loc = "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://backend; }\n";

my $on = 'apimon on; apimon_api forecast;';
my $in_loc = sub { "        location /x/ { $_[0] proxy_pass http://backend; }\n" };
my @bad = (
    [ 'example.invalid', qr/"apimon_redis": invalid address "example\.invalid" \(host not found\)/ ],
    [ '10.0.0.1.5', qr/"apimon_redis": invalid address "10\.0\.0\.1\.5" \(host not found\)/ ],
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
@bad = map { [ "apimon_redis $_->[0]", { redis_conf => "apimon_redis $_->[0];", server => $loc }, $_->[1] ] } @bad;
push @bad, map { [ $_->[0], { redis => $r, server => $in_loc->("$on $_->[0]") }, $_->[1] ] } (
    [ 'apimon_quota_status 600;', qr/"apimon_quota_status": status "600" must be between 400 and 599/ ],
    [ 'apimon_quota_status 399;', qr/"apimon_quota_status": status "399" must be between 400 and 599/ ],
    [ 'apimon_quota_status x;', qr/"apimon_quota_status" directive invalid number/ ],
    [ 'apimon_quota_status 429; apimon_quota_status 403;', qr/"apimon_quota_status" directive is duplicate/ ],
    [ 'apimon_on_redis_error half;', qr/"apimon_on_redis_error": invalid value "half", expected "open" or "closed"/ ],
    [ 'apimon_on_redis_error open; apimon_on_redis_error closed;', qr/"apimon_on_redis_error" directive is duplicate/ ],
    [ 'apimon_api forecast;', qr/"apimon_api" directive is duplicate/ ],
    [ 'apimon_key $http_a; apimon_key $http_b;', qr/"apimon_key" directive is duplicate/ ],
);
push @bad, [ 'apimon_api of 65', { redis => $r, server => $in_loc->('apimon on; apimon_api ' . ('a' x 65) . ';') },
             qr/"apimon_api": invalid API name "a{65}", expected 1-64 of/ ];
for my $case (@bad) {
    my ($name, $opts, $want) = @$case;
    my $n = Apimon::Nginx->new(workers => 1);
    my $started = eval { $n->start(%$opts); 1 };
    $n->stop if $started;
    ok(!$started, "$name: refused");
    like($@, $want, "$name: the message names the directive and the value");
    like($@, qr/in \S+nginx\.conf:\d+/, "$name: with file and line");
}

# accepted: where nothing listens (the default port 6379 is probed first: a
# Redis of the machine's own may be there) the check answers 503 and says where
for my $case ([ '[::1]', '::1', qr/redis at \[::1\]/ ], [ '127.0.0.2', '127.0.0.2', qr/redis at 127\.0\.0\.2/ ],
              [ 'unix:/nonexistent/redis.sock', undef, qr/redis at unix:\/nonexistent\/redis\.sock/ ]) {
    my ($addr, $probe, $logged) = @$case;
    my $n = Apimon::Nginx->new(workers => 1);
    ok(eval { $n->start(redis_conf => "apimon_redis $addr connect_timeout=200ms;", server => $loc); 1 },
       "$addr: accepted") or diag $@;
    my $status = $n->get('/x/a', 'X-API-Key' => $key)->{status};
    $n->stop;
    SKIP: {
        skip "$addr: something listens on port 6379", 2
            if $probe && IO::Socket::IP->new(PeerHost => $probe, PeerPort => 6379, Timeout => 1);
        is($status, 503, "$addr: nothing there, 503");
        like($n->error_log, $logged, "$addr: the connection error names the address");
    }
}

# the address connected to is the one configured: a real Redis on its port;
# the values of the slots are taken: 64 characters of API name; "OPEN" in
# capitals (enum slots ignore case)
my $n = Apimon::Nginx->new(workers => 1);
my $api = 'a' x 64;
$n->start(redis_conf => 'apimon_redis 127.0.0.1:' . $r->port . ';', server => $loc
          . $in_loc->("apimon on; apimon_api $api; apimon_quota_status 429;") =~ s{/x/}{/long/}r
          . $in_loc->('apimon on; apimon_api forecast; apimon_on_redis_error OPEN;') =~ s{/x/}{/open/}r);
is($n->get('/x/a', 'X-API-Key' => $key)->{status}, 200, '127.0.0.1:port: 200');
is($n->get('/open/a', 'X-API-Key' => $key)->{status}, 200, 'apimon_on_redis_error OPEN: accepted');
my $res = $n->get('/long/a', 'X-API-Key' => $key);
is($res->{status}, 403, 'an API name of 64 characters reaches Redis: not entitled');
is($res->{json}{code}, 'not_entitled', '... said so');
$n->stop;

done_testing;
