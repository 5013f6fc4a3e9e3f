#!/usr/bin/perl
# Enforcement configuration: bad lines are refused naming the directive;
# apimon_redis forms (unix socket, db=, password_file=); apimon_key sources and
# apimon_hide_key; the variables passed upstream with proxy_set_header.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $s = Apimon::Nginx::subscribe($r, 'open');
my $key = $s->{primary};

# --- bad configurations: nginx does not start, the message names the directive
my $loc = sub { "        location /x/ { $_[0] proxy_pass http://backend; }\n" };
my $on = 'apimon on; apimon_api forecast;';
my @bad = (
    [ { redis_conf => 'apimon_redis redis.example.invalid:6379;' },
      qr/"apimon_redis": invalid address "redis\.example\.invalid:6379" \(host not found\)/ ],
    [ { redis_conf => 'apimon_redis 127.0.0.1:99999;' }, qr/"apimon_redis": invalid address "127\.0\.0\.1:99999"/ ],
    [ { redis_conf => 'apimon_redis [::1;' }, qr/"apimon_redis": invalid address/ ],
    [ { redis_conf => 'apimon_redis 127.0.0.1:6379 db=x;' }, qr/"apimon_redis": invalid database number "db=x"/ ],
    [ { redis_conf => 'apimon_redis 127.0.0.1:6379 foo=1;' }, qr/"apimon_redis": invalid parameter "foo=1"/ ],
    [ { redis_conf => 'apimon_redis 127.0.0.1:6379 connect_timeout=abc;' }, qr/"apimon_redis": invalid connect timeout/ ],
    [ { redis_conf => 'apimon_redis 127.0.0.1:6379 password_file=/nonexistent/pw;' },
      qr/"apimon_redis": could not open password file "\/nonexistent\/pw"/ ],
    [ { redis_conf => "apimon_redis 127.0.0.1:1;\n    apimon_redis 127.0.0.1:2;" }, qr/"apimon_redis" directive is duplicate/ ],
    [ { redis => $r, server => "        apimon_redis 127.0.0.1:6379;\n" }, qr/"apimon_redis" directive is not allowed here/ ],
    [ { redis => $r, server => $loc->("$on apimon_rate 10;") }, qr/"apimon_rate": invalid rate "10"/ ],
    [ { redis => $r, server => $loc->("$on apimon_rate 0r/s;") }, qr/"apimon_rate": invalid rate "0r\/s"/ ],
    [ { redis => $r, server => $loc->("$on apimon_rate 5r/d;") }, qr/"apimon_rate": invalid rate "5r\/d"/ ],
    [ { redis => $r, server => $loc->("$on apimon_rate 5r/s; apimon_rate 6r/s;") }, qr/"apimon_rate" directive is duplicate/ ],
    [ { redis => $r, server => $loc->("$on apimon_quota 10 year;") }, qr/"apimon_quota": invalid quota/ ],
    [ { redis => $r, server => $loc->("$on apimon_quota 0 day;") }, qr/"apimon_quota": invalid quota/ ],
    [ { redis => $r, server => $loc->("$on apimon_quota day;") }, qr/"apimon_quota": invalid quota/ ],
    [ { redis => $r, server => $loc->("$on apimon_quota 1 2 3;") }, qr/invalid number of arguments in "apimon_quota" directive/ ],
    [ { redis => $r, server => $loc->("$on apimon_quota_status 200;") },
      qr/"apimon_quota_status": status "200" must be between 400 and 599/ ],
    [ { redis => $r, server => $loc->("$on apimon_on_redis_error maybe;") },
      qr/"apimon_on_redis_error": invalid value "maybe", expected "open" or "closed"/ ],
    [ { redis => $r, server => $loc->("apimon on; apimon_api 'bad name';") }, qr/"apimon_api": invalid API name "bad name"/ ],
    [ { redis => $r, server => $loc->("apimon maybe;") }, qr/invalid value "maybe" in "apimon" directive/ ],
    [ { redis => $r, server => $loc->("$on apimon_redis_timeout abc;") }, qr/"apimon_redis_timeout" directive invalid value/ ],
    [ { redis => $r, server => $loc->("$on apimon_key '';") }, qr/"apimon_key" directive takes an empty value/ ],
    [ { redis => $r, server => $loc->("$on apimon_hide_key maybe;") }, qr/invalid value "maybe" in "apimon_hide_key" directive/ ],
    [ { server => $loc->($on) }, qr/"apimon" is on, but "apimon_redis" is not set/ ],
    [ { redis => $r, server => $loc->('apimon on;') }, qr/"apimon" is on in location "\/x\/", but "apimon_api" is not set/ ],
    [ { redis => $r, server => "        apimon on;\n        location /y/ { apimon_api forecast; }\n        location = /z { }\n" },
      qr/"apimon" is on in location "\/z", but "apimon_api" is not set/ ],
);
for my $case (@bad) {
    my $n = Apimon::Nginx->new(workers => 1);
    my ($opts, $want) = @$case;
    my $started = eval { $n->start(%$opts); 1 };
    $n->stop if $started;
    ok(!$started, "refused: $want");
    like($@, $want, 'the message names the directive');
    like($@, qr/in \S+nginx\.conf:\d+/, 'with file and line') if $@ !~ /is not set/;
}

# --- accepted address forms: no port (6379), IPv6; nothing listens there: 503
for my $addr ('127.0.0.1', '[::1]:1', '127.0.0.1:1 db=2 connect_timeout=300ms') {
    my $n = Apimon::Nginx->new(workers => 1);
    ok(eval { $n->start(redis_conf => "apimon_redis $addr;", server => $loc->($on)); 1 },
       "apimon_redis $addr: accepted") or diag $@;
    my $res = $n->get('/x/a', 'X-API-Key' => $key);
    ok($res->{status} == 503 || ($addr eq '127.0.0.1' && $res->{status} =~ /^(200|401|503)$/),
       "apimon_redis $addr: answers ($res->{status})");
    $n->stop;
}

# --- a second Redis on a unix socket, with a password
my $n = Apimon::Nginx->new(workers => 1);
my $sock = $n->prefix . '/redis.sock';
my $r2 = Apimon::Redis->start(args => [ '--unixsocket', $sock, '--unixsocketperm', '777' ]);
$r2->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $s2 = Apimon::Nginx::subscribe($r2, 'open');
$r2->cmd('CONFIG', 'SET', 'requirepass', 'sekret-pw');
{
    open my $fh, '>', $n->prefix . '/conf/pw' or die $!;
    print $fh "sekret-pw\n";
    close $fh;
}
my $server = <<'CONF';
        location /x/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }
CONF
$n->start(redis_conf => "apimon_redis unix:$sock password_file=pw;", server => $server);
is($n->get('/x/a', 'X-API-Key' => $s2->{primary})->{status}, 200, 'unix socket + password: 200');
$n->stop;
unlike($n->error_log, qr/sekret-pw/, 'the password is not logged');

$n = Apimon::Nginx->new(workers => 1);
{
    open my $fh, '>', $n->prefix . '/conf/pw' or die $!;
    print $fh "wrong-pw\n";
    close $fh;
}
$n->start(redis_conf => "apimon_redis unix:$sock password_file=pw;", server => $server);
is($n->get('/x/a', 'X-API-Key' => $s2->{primary})->{status}, 503, 'wrong password: 503');
$n->stop;
like($n->error_log, qr/apimon: redis at unix:\S+ refused AUTH/, 'wrong password: logged');
unlike($n->error_log, qr/wrong-pw/, 'the wrong password is not logged either');
$r2->stop;

# db=N: an empty database knows no key
$n = Apimon::Nginx->new(workers => 1);
$n->start(redis_conf => 'apimon_redis 127.0.0.1:' . $r->port . ' db=3 connect_timeout=2s;', server => $server);
my $res = $n->get('/x/a', 'X-API-Key' => $key);
is($res->{status}, 401, 'db=3: the key is unknown there');
is($res->{json}{code}, 'invalid_key', 'db=3: asked Redis (invalid_key, not redis_error)');
$n->stop;

# --- key sources and apimon_hide_key
my $conf_server = <<'CONF';
        apimon_api forecast;
        proxy_set_header X-Apimon-Sub $apimon_subscription;
        proxy_set_header X-Apimon-Plan $apimon_plan;
        proxy_set_header X-Apimon-Product $apimon_product;
        proxy_set_header X-Apimon-Result $apimon_result;
        proxy_set_header X-Apimon-Q $apimon_quota_remaining;
CONF
$n = Apimon::Nginx->new(workers => 1);
my $echo = $n->port('echo');
for my $l ([ 'hidden', '' ], [ 'shown', 'apimon_hide_key off;' ],
           [ 'azure', 'apimon_key $http_ocp_apim_subscription_key;' ],
           [ 'arg', 'apimon_key $arg_api_key; apimon_quota 1000 month;' ],
           [ 'arg-shown', 'apimon_key $arg_api_key; apimon_hide_key off;' ],
           [ 'cookie', 'apimon_key $cookie_apikey;' ]) {
    $conf_server .= "        location /$l->[0]/ { apimon on; $l->[1] proxy_pass http://127.0.0.1:$echo; }\n";
}
$n->start(redis => $r, server => $conf_server, http => <<"HTTP");
    server {
        listen 127.0.0.1:$echo;
        access_log off;
        location / {
            return 200 "args=\$args ocp=\$http_ocp_apim_subscription_key x=\$http_x_api_key before=\$http_x_before after=\$http_x_after ua=\$http_user_agent sub=\$http_x_apimon_sub plan=\$http_x_apimon_plan product=\$http_x_apimon_product result=\$http_x_apimon_result q=\$http_x_apimon_q h20=\$http_x_h20 cookie=\$http_cookie\\n";
        }
    }
HTTP

sub fields {
    my ($text) = @_;
    return { map { split /=/, $_, 2 } grep { /=/ } split / /, ($text // '') =~ s/\n$//r };
}

$res = $n->request('GET', '/hidden/a', headers => { 'X-Before' => 'b1', 'X-API-Key' => $key, 'X-After' => 'a1',
                                                   'User-Agent' => 'ua1' });
is($res->{status}, 200, 'hidden: 200');
my $f = fields($res->{content});
is($f->{x}, '', 'apimon_hide_key on (default): the header is not passed');
is($f->{before}, 'b1', 'the header before it is passed');
is($f->{after}, 'a1', 'the header after it is passed');
is($f->{ua}, 'ua1', 'User-Agent is passed');
is($f->{sub}, $s->{id}, 'proxy_set_header $apimon_subscription');
is($f->{plan}, 'open', 'proxy_set_header $apimon_plan');
is($f->{product}, 'weather', 'proxy_set_header $apimon_product');
is($f->{result}, 'allowed', 'proxy_set_header $apimon_result');

# many headers (several list parts), the key twice, in the middle
my @many = map { ("X-H$_" => "v$_") } 1 .. 30;
my $raw = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $n->http_port, Proto => 'tcp') or die $!;
my $req = "GET /hidden/many HTTP/1.0\r\nHost: localhost\r\n";
for my $i (1 .. 30) {
    $req .= "X-H$i: v$i\r\n";
    $req .= "X-API-Key: $key\r\n" if $i == 10 || $i == 25;
}
$req .= "User-Agent: ua-many\r\n\r\n";
print $raw $req;
my $resp = do { local $/; <$raw> };
like($resp, qr/^HTTP\/1\.1 200/, 'many headers: 200');
my ($body) = $resp =~ /\r\n\r\n(.*)$/s;
$f = fields($body);
is($f->{x}, '', 'many headers: both copies of the key header removed');
is($f->{h20}, 'v20', 'many headers: the others are intact');
is($f->{ua}, 'ua-many', 'many headers: User-Agent (after the removed ones) intact');

$f = fields($n->get('/shown/a', 'X-API-Key' => $key)->{content});
is($f->{x}, $key, 'apimon_hide_key off: the header is passed');

$res = $n->get('/azure/a', 'Ocp-Apim-Subscription-Key' => $key);
is($res->{status}, 200, 'apimon_key $http_ocp_apim_subscription_key: 200');
is(fields($res->{content})->{ocp}, '', 'that header is hidden');
is($n->get('/azure/a', 'X-API-Key' => $key)->{status}, 401, 'X-API-Key is not looked at there');

$res = $n->get("/arg/a?x=1&api_key=$key&y=2");
is($res->{status}, 200, 'apimon_key $arg_api_key: 200');
is(fields($res->{content})->{args}, 'x=1&y=2', 'the argument is removed from the upstream request');
is(fields($res->{content})->{q}, 999, 'proxy_set_header $apimon_quota_remaining');
$res = $n->get("/arg/a?api_key=$key");
is(fields($res->{content})->{args}, '', 'the only argument removed');
$res = $n->get("/arg-shown/a?api_key=$key&z=3");
is(fields($res->{content})->{args}, "api_key=$key&z=3", 'apimon_hide_key off: the argument is passed');
is($n->get('/arg/a?x=1')->{status}, 401, 'no argument: 401');

$res = $n->get('/cookie/a', 'Cookie' => "a=b; apikey=$key");
is($res->{status}, 200, 'apimon_key $cookie_apikey: 200');
like($res->{content}, qr/cookie=a=b; apikey=\Q$key\E/, 'a cookie is not hidden (documented)');

$n->stop;
like($n->access_log, qr{^/hidden/a 200 allowed \Q$s->{id}\E open weather - -$}m, 'access log line');

done_testing;
