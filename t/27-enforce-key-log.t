#!/usr/bin/perl
# Enforcement: API keys never reach the error log. With the key in the query
# string (apimon_key $arg_api_key) or in a header, every kind of refusal is
# logged at info with nginx's request context, the key's value redacted;
# so are nginx's own lines of such a request (an upstream that is down), a
# key in a Referer, and a second copy of the argument.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());

my $n = Apimon::Nginx->new(workers => 1);
my $info = $n->prefix . '/logs/info.log';
my $dead = Apimon::Nginx::free_port();
$n->start(redis => $r, http => "error_log $info info;", server => <<"CONF");
        location /q/ {
            apimon on;
            apimon_api forecast;
            apimon_key \$arg_api_key;
            proxy_pass http://backend;
        }

        location /h/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }

        location /dead/ {
            apimon on;
            apimon_api forecast;
            apimon_key \$arg_api_key;
            apimon_hide_key off;
            proxy_pass http://127.0.0.1:$dead;
        }
CONF

my %sub = (
    active    => Apimon::Nginx::subscribe($r, 'open'),
    inactive  => Apimon::Nginx::subscribe($r, 'open'),
    rate      => Apimon::Nginx::subscribe($r, 'hourly'),
    quota     => Apimon::Nginx::subscribe($r, 'small'),
);
$r->set_state($sub{inactive}{id}, 'suspend');
my %key = map { $_ => $sub{$_}{primary} } keys %sub;
$key{unknown} = Apimon::Redis::new_key(Apimon::Redis::new_uuid());
$key{malformed} = 'ak_not-a-key-but-a-secret-all-the-same-0123456789';

sub qk { $n->get("/q/x?a=1&api_key=$_[0]", %{ $_[1] // {} }) }
sub hk { $n->get('/h/x', 'X-API-Key' => $_[0]) }

# use up the hourly rate and the daily quota of 3 in each way of sending the key
qk($key{rate});
qk($key{quota}) for 1 .. 3;
my %want = (unknown => 401, malformed => 401, inactive => 403, rate => 429, quota => 403);
for my $kind (sort keys %want) {
    is(qk($key{$kind})->{status}, $want{$kind}, "query key, $kind: $want{$kind}");
}
is(qk($key{active})->{status}, 200, 'query key, active: 200');

for my $kind (sort keys %want) {
    is(hk($key{$kind})->{status}, $want{$kind}, "header key, $kind: $want{$kind}");
}

# the key in a Referer, the argument twice, nginx's own error line
is(hk($key{unknown})->{status}, 401, 'header key again');
is($n->get('/h/x', 'X-API-Key' => $key{inactive},
           Referer => "https://portal.example/try?key=$key{inactive}")->{status},
   403, 'a Referer holding the key');
is($n->get("/q/x?api_key=$key{malformed}&API_KEY=$key{unknown}")->{status}, 401,
   'the argument twice');
is($n->get("/dead/x?api_key=$key{active}")->{status}, 502, 'an upstream that is down: 502');
is($n->get("/dead/x?api_key=$key{inactive}")->{status}, 403, 'a refusal before that upstream');

$n->stop;
my $log = Apimon::Nginx::_slurp($info);
ok(length $log, 'the info log has lines');
for my $kind (sort keys %key) {
    unlike($log, qr/\Q$key{$kind}\E/, "the $kind key is not in the error log");
    # nor a long enough part of it (a truncated line)
    unlike($log, qr/\Q${\ substr($key{$kind}, 20, 24)}\E/, "nor a part of the $kind key");
}
for my $kind (qw(unknown malformed inactive rate quota)) {
    like($log, qr/apimon: refused with $want{$kind}: .*request: "GET \/q\/x\?a=1&api_key=\[redacted\] HTTP\/1\.1"/,
         "query key, $kind: the refusal's context, the key redacted");
}
like($log, qr/apimon: refused with 403: inactive.*referrer: "https:\/\/portal\.example\/try\?key=\[redacted\]"/,
     'the key in a Referer redacted');
like($log, qr/request: "GET \/q\/x\?api_key=\[redacted\]&API_KEY=\[redacted\] HTTP/,
     'every copy of the argument redacted');
like($log, qr/\[error\].*connect\(\) failed.*request: "GET \/dead\/x\?api_key=\[redacted\] HTTP\/1\.1", upstream: "http:\/\/127\.0\.0\.1:\d+\/dead\/x\?api_key=\[redacted\]"/,
     "nginx's own error line of the request: the key redacted in the request and the upstream");
like($log, qr/apimon: refused with 403: inactive, subscription $sub{inactive}{id}, client: 127\.0\.0\.1, server: localhost, request: "GET \/h\/x HTTP\/1\.1", host: "127\.0\.0\.1:\d+"$/m,
     'header key: the usual context');

done_testing;
