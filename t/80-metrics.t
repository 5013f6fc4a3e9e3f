#!/usr/bin/perl
# apimon_metrics: the Prometheus text exposition format (0.0.4), checked by a
# strict parser written here; the counters equal the traffic sent, summed
# over two workers, and go on across a reload; bounded labels.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use HTTP::Tiny;
use Apimon::Redis;
use Apimon::Nginx;
use Apimon::Prom;

*parse_exposition = \&Apimon::Prom::parse_exposition;

# the parser refuses what it should
for my $bad ("x 1", "x 1\n", "# TYPE x counter\nx 1\n", "# TYPE x_total counter\nx_total{a=\"b} 1\n",
             "# TYPE y gauge\ny 1\ny 2\n", "# TYPE y gauge\ny{a=\"1\",a=\"2\"} 1\n",
             "# TYPE y gauge\ny one\n", "# TYPE y gauge\n\ny 1\n",
             "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
             "# TYPE y gauge\n# TYPE z gauge\ny 1\nz 1\ny{a=\"1\"} 1\n") {
    ok(!eval { parse_exposition($bad); 1 }, 'the parser refuses ' . ($bad =~ s/\n/\\n/gr));
}
ok(eval { parse_exposition("# HELP y a \\\\ b\n# TYPE y gauge\ny{a=\"q\\\"\"} 1.5\n"); 1 }, 'the parser takes a good one') or diag $@;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $key = Apimon::Nginx::subscribe($r, 'open')->{primary};
my $small = Apimon::Nginx::subscribe($r, 'small')->{primary};
my $maps = Apimon::Nginx::subscribe($r, 'maps')->{primary};

my $n = Apimon::Nginx->new(workers => 2);
my $spread = Apimon::Nginx::free_port();
my $tokens = $n->prefix . '/admin.tokens';
{ open my $fh, '>', $tokens or die; print $fh "portal:portal-token-0123456789abcdef\n"; close $fh }

sub conf {
    my ($extra) = @_;
    return (redis => $r, log_format => '$pid $uri $status $apimon_result', http => <<"HTTP", server => <<"CONF");
    server {
        # reuseport: the kernel spreads connections over both workers
        listen 127.0.0.1:$spread reuseport;

        location /forecast/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }

        location /history/ {
            apimon on;
            apimon_api history;
            proxy_pass http://backend;
        }
$extra
    }
HTTP
        location = /metrics {
            apimon_metrics;
        }

        location /apimon/ {
            apimon_admin;
            apimon_admin_token_file $tokens;
        }
CONF
}

$n->start(conf(''));

my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 0);
my %sent;
sub send_n {
    my ($path, $api, $k, $count, $want) = @_;
    my %st;
    for (1 .. $count) {
        my $res = $http->get("http://127.0.0.1:$spread$path", { headers => ($k ? { 'X-API-Key' => $k } : {}) });
        $st{$res->{status}}++;
    }
    is_deeply(\%st, $want, "$count calls to $path: " . join(',', map { "$_ x$st{$_}" } sort keys %st));
}

sub metrics {
    my $res = $n->get('/metrics');
    is($res->{status}, 200, 'metrics: 200');
    like($res->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4(;|$)}, 'Content-Type: text/plain; version=0.0.4');
    my $m = eval { parse_exposition($res->{content}) };
    ok($m, 'the text parses as exposition format') or diag $@, $res->{content};
    return $m // {};
}

sub checks {
    my ($m, $api, $result) = @_;
    return $m->{apimon_checks_total}{samples}{"apimon_checks_total{api=$api,result=$result}"};
}

send_n('/forecast/a', 'forecast', $key, 40, { 200 => 40 });
send_n('/forecast/a', 'forecast', undef, 5, { 401 => 5 });
send_n('/forecast/a', 'forecast', 'not-a-key', 3, { 401 => 3 });
send_n('/history/a', 'history', $small, 5, { 200 => 3, 403 => 2 });
send_n('/history/a', 'history', $maps, 2, { 403 => 2 });

my %pids;
for (split /\n/, $n->access_log) {
    $pids{$1}++ if m{^(\d+) /(forecast|history)/};
}
is(scalar keys %pids, 2, 'both workers answered checks: ' . join(', ', map { "$_ x$pids{$_}" } sort keys %pids));

my $m = metrics();
is($m->{apimon_checks_total}{type}, 'counter', 'apimon_checks_total is a counter');
is(checks($m, 'forecast', 'allowed'), 40, 'forecast allowed: 40');
is(checks($m, 'forecast', 'missing_key'), 5, 'forecast missing_key: 5');
is(checks($m, 'forecast', 'invalid_key'), 3, 'forecast invalid_key: 3');
is(checks($m, 'forecast', 'rate_limited'), 0, 'forecast rate_limited: 0 (defined)');
is(checks($m, 'history', 'allowed'), 3, 'history allowed: 3');
is(checks($m, 'history', 'quota_exceeded'), 2, 'history quota_exceeded: 2');
is(checks($m, 'history', 'not_entitled'), 2, 'history not_entitled: 2');
is(checks($m, 'forecast', 'allowed_overage'), 0, 'allowed_overage: defined, 0');
my @labels = map { /api=([^,}]*)/ ? $1 : () } keys %{ $m->{apimon_checks_total}{samples} };
my %apis = map { $_ => 1 } @labels;
is_deeply([sort keys %apis], [qw(forecast history)], 'api labels: the configured APIs only');

my $h = $m->{apimon_redis_request_duration_seconds};
is($h->{type}, 'histogram', 'Redis latency: a histogram');
my $rt = $h->{samples}{'apimon_redis_request_duration_seconds_count{}'};
ok($rt >= 40 + 7, "Redis round trips counted ($rt)");
ok($h->{samples}{'apimon_redis_request_duration_seconds_sum{}'} > 0, 'Redis latency: a sum in seconds');
my $b = $m->{apimon_check_batch_size};
is($b->{type}, 'histogram', 'batch size: a histogram');
is($b->{samples}{'apimon_check_batch_size_sum{}'}, 40 + 5 + 2, 'batch sizes add up to the checks sent to Redis (not the malformed keys)');
is($m->{apimon_redis_connected}{samples}{"apimon_redis_connected{worker=$_}"}, 1, "worker $_ connected") for 0, 1;
is($m->{apimon_redis_connected}{type}, 'gauge', 'apimon_redis_connected is a gauge');
is($m->{apimon_redis_circuit_opens_total}{samples}{'apimon_redis_circuit_opens_total{}'}, 0, 'no circuit opened');
is($m->{apimon_redis_reconnects_total}{type}, 'counter', 'reconnects: a counter');

# --- a reload: the same zone, the counts go on; a new API gets its row
ok($n->reload(conf(<<'EXTRA')), 'reloaded');
        location /tiles/ {
            apimon on;
            apimon_api tiles;
            proxy_pass http://backend;
        }
EXTRA
send_n('/forecast/b', 'forecast', $key, 10, { 200 => 10 });
send_n('/tiles/b', 'tiles', $maps, 4, { 200 => 4 });
$m = metrics();
is(checks($m, 'forecast', 'allowed'), 50, 'after the reload: forecast allowed 40 + 10');
is(checks($m, 'history', 'quota_exceeded'), 2, 'after the reload: history quota_exceeded kept');
is(checks($m, 'tiles', 'allowed'), 4, 'after the reload: tiles allowed 4');
is($m->{apimon_check_batch_size}{samples}{'apimon_check_batch_size_sum{}'}, 47 + 14, 'batch sizes go on across the reload');
is($m->{apimon_redis_connected}{samples}{"apimon_redis_connected{worker=$_}"}, 1, "after the reload: worker $_ connected") for 0, 1;

# --- Redis stopped: the circuit opens, the connection state says so
$r->stop;
send_n('/forecast/c', 'forecast', $key, 6, { 503 => 6 });
$m = metrics();
is(checks($m, 'forecast', 'redis_error'), 6, 'Redis stopped: redis_error 6');
my $opens = $m->{apimon_redis_circuit_opens_total}{samples}{'apimon_redis_circuit_opens_total{}'};
ok($opens >= 1, "Redis stopped: the circuit opened ($opens)");
my $up = 0;
$up += $m->{apimon_redis_connected}{samples}{"apimon_redis_connected{worker=$_}"} for 0, 1;
is($up, 0, 'Redis stopped: no worker connected');
$r->restart;
my $deadline = time + 10;
while (time < $deadline) {
    my $res = $http->get("http://127.0.0.1:$spread/forecast/d", { headers => { 'X-API-Key' => $key } });
    last if $res->{status} == 200;
    select undef, undef, undef, 0.1;
}
$m = metrics();
my $rc = 0;
$rc += $m->{apimon_redis_reconnects_total}{samples}{"apimon_redis_reconnects_total{worker=$_}"} for 0, 1;
ok($rc >= 1, "reconnects counted ($rc)");

# --- the management API: by route table row and status; unrouted: none
my $base = '/apimon/v1/organizations/default';
my %auth = (Authorization => 'Bearer portal-token-0123456789abcdef');
is($n->get("$base/apiproducts", %auth)->{status}, 200, 'admin: list products') for 1 .. 3;
is($n->get("$base/apiproducts/weather", %auth)->{status}, 200, 'admin: one product');
is($n->get("$base/apiproducts/nope", %auth)->{status}, 404, 'admin: no such product');
is($n->get("$base/apiproducts")->{status}, 401, 'admin: no token');
is($n->get("$base/nothing/here/at/all", %auth)->{status}, 404, 'admin: no such route');
$m = metrics();
my $a = $m->{apimon_admin_requests_total}{samples};
is($a->{'apimon_admin_requests_total{code=200,endpoint=GET apiproducts}'}, 3, 'admin: GET apiproducts 200 x3');
is($a->{'apimon_admin_requests_total{code=200,endpoint=GET apiproducts/{product}}'}, 1, 'admin: GET apiproducts/{product} 200');
is($a->{'apimon_admin_requests_total{code=404,endpoint=GET apiproducts/{product}}'}, 1, 'admin: GET apiproducts/{product} 404');
is($a->{'apimon_admin_requests_total{code=401,endpoint=none}'}, 1, 'admin: 401 before routing: endpoint none');
is($a->{'apimon_admin_requests_total{code=404,endpoint=none}'}, 1, 'admin: no route: endpoint none');
is(scalar keys %$a, 5, 'admin: only the series that counted something');

is($n->get('/metrics', )->{status}, 200, 'GET again');
is($n->request('POST', '/metrics')->{status}, 405, 'POST /metrics: 405');

$n->stop;
is_deeply([$n->alerts], [], 'no alerts');
done_testing;
