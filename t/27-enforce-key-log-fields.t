#!/usr/bin/perl
# Enforcement: the error log redacts the key's text only when the value sent
# has a key's prefix and length (ak_ 74, ak2_ 84 characters). Any other
# value is no secret and must not blank other fields of the request's lines
# (a client sending "X-API-Key: 127.0.0.1" blanked the host, "ref.example"
# the referrer, "localhost" the server name). The apimon_key argument is still redacted by name, whatever
# its value.
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
$n->start(redis => $r, http => "error_log $info info;", server => <<"CONF");
        location /h/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }

        location /q/ {
            apimon on;
            apimon_api forecast;
            apimon_key \$arg_api_key;
            proxy_pass http://backend;
        }
CONF

my $port = $n->http_port;
# a mistyped key (a key's prefix and length, a bad digit): still redacted
my $like1 = 'ak_' . ('Z' x 71);
my $like2 = 'ak2_' . ('Z' x 80);

is($n->get('/h/ip', 'X-API-Key' => '127.0.0.1')->{status}, 401, 'X-API-Key: 127.0.0.1: 401');
is($n->get('/h/ref', 'X-API-Key' => 'ref.example', Referer => 'http://ref.example/ok')->{status}, 401,
   'X-API-Key: ref.example with a Referer naming it: 401');
is($n->get('/h/name', 'X-API-Key' => 'localhost')->{status}, 401,
   'X-API-Key: localhost (the server name): 401');
is($n->get('/h/x', 'X-API-Key' => $like1, Referer => "http://p.example/?k=$like1")->{status}, 401,
   'a version 1 key mistyped, also in the Referer: 401');
is($n->get('/h/x', 'X-API-Key' => $like2, Referer => "http://p.example/?k=$like2")->{status}, 401,
   'a version 2 key mistyped, also in the Referer: 401');
is($n->get('/q/x?api_key=127.0.0.1')->{status}, 401, 'api_key=127.0.0.1 in the query: 401');

$n->stop;
my $log = Apimon::Nginx::_slurp($info);
my @refusals = grep { /apimon: refused with 401/ } split /\n/, $log;
is(scalar @refusals, 6, 'six refusal lines');

like($log, qr/refused with 401: invalid_key, client: 127\.0\.0\.1, server: localhost, request: "GET \/h\/ip HTTP\/1\.1", host: "127\.0\.0\.1:$port"$/m,
     'key 127.0.0.1: the host is shown');
like($log, qr/refused with 401: .*request: "GET \/h\/ref HTTP\/1\.1", host: "127\.0\.0\.1:$port", referrer: "http:\/\/ref\.example\/ok"$/m,
     'key ref.example: the referrer is shown');
like($log, qr/refused with 401: invalid_key, client: 127\.0\.0\.1, server: localhost, request: "GET \/h\/name HTTP\/1\.1", host: "127\.0\.0\.1:$port"$/m,
     'key localhost: the server name is shown');
is(scalar(grep { /client: 127\.0\.0\.1, server: localhost, request: "GET \/[hq]\// } @refusals), 6,
   'every refusal line shows client and server');
unlike($log, qr/\Q$like1\E|\Q$like2\E/, 'mistyped keys are not in the log');
like($log, qr/referrer: "http:\/\/p\.example\/\?k=\[redacted\]"$/m, 'a mistyped key in the Referer: redacted');
like($log, qr/request: "GET \/q\/x\?api_key=\[redacted\] HTTP\/1\.1"/, 'the key argument: redacted by name');

done_testing;
