#!/usr/bin/perl
# make bench, part 1: plain nginx proxy vs the same proxy with apimon enforcing
# key + rate + quota, measured in one run on this machine with wrk.
#
# Both locations live in one nginx (same workers, same upstream, keepalive),
# so the only difference is the access check. Prints req/s, p99 and the ratio.
# Environment: BENCH_DURATION (s, default 10), BENCH_CONNECTIONS (50),
# BENCH_THREADS (2), BENCH_WORKERS (nginx worker_processes to measure, "2 1").

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib", "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use File::Spec;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep);
use IO::Socket::IP;
use Apimon::Redis;
use Bench;

my $dur     = $ENV{BENCH_DURATION}    || 10;
my $conns   = $ENV{BENCH_CONNECTIONS} || 50;
my $threads = $ENV{BENCH_THREADS}     || 2;
my $build   = File::Spec->rel2abs($ENV{APIMON_BUILD} || "$FindBin::Bin/../build");   # nginx -p changes the base

system('which wrk >/dev/null 2>&1') == 0 or die "wrk is not installed (apt-get install wrk)\n";

my $redis = Apimon::Redis->start;

# one product, one plan whose limits never refuse during the run: the check
# still evaluates and counts every window
$redis->apply_catalog(<<'JSON');
{"products": [{"name": "bench", "displayName": "Bench", "apis": ["echo"]}],
 "plans": [{"name": "bench-gold", "product": "bench", "displayName": "Gold",
            "rateLimit": {"limit": 1000000, "per": "second"},
            "quota": {"limit": 1000000000, "period": "month"},
            "pricing": {"model": "flat", "currency": "usd", "amount": 1000}}]}
JSON
$redis->put_developer('bench@example.com', { firstName => 'Bench', lastName => 'User', userName => 'bench' });
my $sub = $redis->create_subscription(owner => 'bench@example.com', product => 'bench',
                                      plan => 'bench-gold');
my $key = $sub->{primary};

my $rport = $redis->port;
my @workers = split ' ', ($ENV{BENCH_WORKERS} || '2 1');
my (@rows, $port);

for my $w (@workers) {
    my ($plain, $apimon, $stats) = run_config($w);
    push @rows, [$w, $plain, $apimon, $stats];
}
$redis->stop;

printf "\nmodule benchmark: wrk -t%d -c%d -d%ds, %s cores; one nginx, same upstream, per worker count\n",
    $threads, $conns, $dur, `nproc` =~ s/\s+//r;
my ($best_plain, $best_apimon) = (0, 0);
for my $r (@rows) {
    my ($w, $plain, $apimon, $stats) = @$r;
    printf "  worker_processes %d\n", $w;
    printf "    %-26s %10s req/s   p99 %8s   non-2xx %s\n", 'plain proxy', Bench::fmt($plain->{rps}), $plain->{p99}, $plain->{errors};
    printf "    %-26s %10s req/s   p99 %8s   non-2xx %s\n", 'apimon key+rate+quota', Bench::fmt($apimon->{rps}), $apimon->{p99}, $apimon->{errors};
    printf "    ratio apimon/plain: %.2f\n", $apimon->{rps} / $plain->{rps};
    printf "    WARNING: %d responses were not 2xx: the protected run measured refusals, not the check\n",
        $apimon->{errors} if $apimon->{errors};
    printf "    redis: evalsha %s\n", $stats // '-';
    $best_plain  = $plain->{rps}  if $plain->{rps}  > $best_plain;
    $best_apimon = $apimon->{rps} if $apimon->{rps} > $best_apimon;
}
printf "  best apimon / best plain (any worker count): %.2f\n", $best_apimon / $best_plain
    if @rows > 1;

# One nginx with both locations and the given number of workers: warm up,
# measure the plain location, then the protected one.
sub run_config {
    my ($workers) = @_;
    my $dir = tempdir('apimon-bench-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    mkdir "$dir/logs";
    $port = Bench::free_port();
    my $up = Bench::free_port();

    open my $f, '>', "$dir/nginx.conf" or die $!;
    print $f Bench::nginx_conf_head(build => $build, workers => $workers, dir => $dir,
                                    rport => $rport, up => $up), <<"CONF";

    server {
        listen 127.0.0.1:$port;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location /plain/ { proxy_pass http://backend; }

        location /api/ {
            apimon on;
            apimon_api echo;
            apimon_rate 1000000r/s;
            apimon_quota 1000000000 day;
            proxy_pass http://backend;
        }
    }
}
CONF
    close $f;

    my $pid = Bench::start_nginx($dir, $port);

    # sanity: the protected location really enforces (401 without a key)
    my $probe = `curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/api/x`;
    my $ok    = `curl -s -o /dev/null -w '%{http_code}' -H 'X-API-Key: $key' http://127.0.0.1:$port/api/x`;
    die "sanity check failed: no key → $probe, key → $ok\n" unless $probe eq '401' && $ok eq '200';

    wrk("/plain/", "", 3);                                  # warm up
    wrk("/api/", $key, 3);
    my $plain = wrk("/plain/", "", $dur);
    $redis->cmd('CONFIG', 'RESETSTAT');
    my $apimon = wrk("/api/", $key, $dur);

    # where the time goes on the Redis side
    my ($stats) = $redis->cmd('INFO', 'commandstats') =~ /^cmdstat_evalsha:(\S+)/m;

    kill 'QUIT', $pid;
    waitpid $pid, 0;
    return ($plain, $apimon, $stats);
}

sub wrk {
    my ($path, $k, $d) = @_;
    my @h = $k ne '' ? ('-H', "X-API-Key: $k") : ();
    my $out = `wrk -t$threads -c$conns -d${d}s --latency @{[map { "'$_'" } @h]} http://127.0.0.1:$port${path}bench 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($p99) = $out =~ /^\s+99%\s+(\S+)/m;
    my ($non) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "wrk failed:\n$out" unless $rps;
    return { rps => $rps, p99 => $p99 // '?', errors => $non // 0 };
}

