#!/usr/bin/perl
# Forged API keys: how many reach Redis, and what refusing them costs nginx.
#
# wrk sends keys from a list, each key once per run (distinct) or one key over
# and over (repeated), to a location enforcing keys. Redis' INFO tells how
# many checks it ran: every check looks up its subscription hash, and a forged
# key names a subscription that does not exist, so each one is a
# keyspace miss; cmdstat_evalsha counts the batched calls. The CPU time of
# the worker processes over the run, per request, is what a refusal costs
# nginx (compare a malformed key, refused before any digest or tag).
#
#   perl bench/forged-keys.pl            (make all first)
#
# Environment: BENCH_DURATION (s, default 5), BENCH_CONNECTIONS (50),
# BENCH_THREADS (2), BENCH_WORKERS (nginx worker_processes, 1),
# BENCH_KEYS (keys in the distinct lists, 400000: more than a run sends), BENCH_SECRET (0: run
# without apimon_key_secret_file, as a build without it must),
# BENCH_CASES (which rows, default all that the build supports).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib", "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use File::Spec;
use POSIX ();
use Apimon::Redis;
use Bench;

my $dur     = $ENV{BENCH_DURATION}    || 5;
my $conns   = $ENV{BENCH_CONNECTIONS} || 50;
my $threads = $ENV{BENCH_THREADS}     || 2;
my $workers = $ENV{BENCH_WORKERS}     || 1;
my $nkeys   = $ENV{BENCH_KEYS}        || 400000;
my $secret  = $ENV{BENCH_SECRET} // 1;
my $build   = File::Spec->rel2abs($ENV{APIMON_BUILD} || "$FindBin::Bin/../build");

system('which wrk >/dev/null 2>&1') == 0 or die "wrk is not installed (apt-get install wrk)\n";

my $dir = tempdir('apimon-forged-XXXXXX', TMPDIR => 1, CLEANUP => 1);
mkdir "$dir/logs";
my $secret_text = join '', map { sprintf '%02x', int rand 256 } 1 .. 32;
write_file("$dir/key.secret", "$secret_text\n");

# the key lists: forged version 1 keys (right shape and CRC), forged version 2
# keys (right shape, wrong tag), malformed keys (no check at all)
my %lists = (
    v1        => [ map { Apimon::Redis::new_key(Apimon::Redis::new_uuid()) } 1 .. $nkeys ],
    v2        => [ map { forged_v2() } 1 .. $nkeys ],
    malformed => [ map { 'ak_' . ('x' x 71) . sprintf('%06d', $_) } 1 .. $nkeys ],
);
$lists{'v1-repeated'} = [ $lists{v1}[0] ];
for my $name (keys %lists) {
    write_file("$dir/$name.keys", join("\n", @{ $lists{$name} }) . "\n");
}
write_file("$dir/keys.lua", <<'LUA');
local keys, n, i = {}, 0, 0
local first = true
function request()
  if first then
    for line in io.lines(os.getenv("KEYS_FILE")) do n = n + 1; keys[n] = line end
    -- threads start apart, so a distinct list is not sent twice
    i = math.floor(n * (tonumber(id) or 0) / tonumber(os.getenv("WRK_THREADS")))
    first = false
  end
  i = i % n + 1
  return wrk.format("GET", "/api/x", { ["X-API-Key"] = keys[i] })
end
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
LUA

my @cases = $ENV{BENCH_CASES} ? split(' ', $ENV{BENCH_CASES})
                               : ('malformed', 'v1', 'v1-repeated', ($secret ? ('v2', 'v1-legacy-off') : ()));

my $redis = Apimon::Redis->start;
my @rows;
for my $case (@cases) {
    my ($list, $legacy) = $case eq 'v1-legacy-off' ? ('v1', 'off') : ($case, undef);
    my $pid = start_nginx($legacy);
    wrk('malformed', 2);          # warm up, without sending a listed key early
    $redis->cmd('CONFIG', 'RESETSTAT');
    my $cpu = worker_cpu($pid);
    my $res = wrk($list, $dur);
    $res->{us} = (worker_cpu($pid) - $cpu) * 1e6 / $res->{requests};
    my $info = $redis->cmd('INFO', 'all');
    my ($misses) = $info =~ /^keyspace_misses:(\d+)/m;
    my ($calls) = $info =~ /^cmdstat_evalsha:calls=(\d+)/m;
    push @rows, [ $case, $res, $misses // 0, $calls // 0 ];
    kill 'QUIT', $pid;
    waitpid $pid, 0;
}
$redis->stop;

printf "\nforged keys: wrk -t%d -c%d -d%ds, worker_processes %d, %s cores, secret %s\n",
    $threads, $conns, $dur, $workers, `nproc` =~ s/\s+//r, $secret ? 'configured' : 'not configured';
printf "  %-14s %10s %8s %12s %8s %14s %12s\n", 'keys', 'req/s', 'p99', 'worker CPU', '401s',
    'checks/s Redis', 'evalsha/s';
for my $row (@rows) {
    my ($case, $res, $misses, $calls) = @$row;
    printf "  %-14s %10s %8s %9.2f us %8s %14s %12s\n", $case, Bench::fmt($res->{rps}), $res->{p99}, $res->{us},
        $res->{non2xx} == $res->{requests} ? 'all' : "$res->{non2xx}/$res->{requests}",
        Bench::fmt($misses / $dur), Bench::fmt($calls / $dur);
}

sub forged_v2 {
    (my $hex = Apimon::Redis::new_uuid()) =~ tr/-//d;
    my @b32 = ('a' .. 'z', 2 .. 7);
    return 'ak2_' . $hex . join('', map { $b32[rand 32] } 1 .. 48);
}

sub start_nginx {
    my ($legacy) = @_;
    my $port = Bench::free_port();
    my $keyconf = $secret ? "apimon_key_secret_file $dir/key.secret;" : '';
    $keyconf .= " apimon_key_legacy $legacy;" if $legacy;
    write_file("$dir/nginx.conf", Bench::nginx_conf_head(build => $build, workers => $workers, dir => $dir,
                                                         rport => $redis->port, up => Bench::free_port())
                                  . <<"CONF");
    $keyconf

    server {
        listen 127.0.0.1:$port;
        location /api/ {
            apimon on;
            apimon_api echo;
            proxy_pass http://backend;
        }
    }
}
CONF
    $ENV{BENCH_PORT} = $port;
    return Bench::start_nginx($dir, $port);
}

# CPU seconds (user + system) of the worker processes of an nginx master
sub worker_cpu {
    my ($master) = @_;
    my $ticks = POSIX::sysconf(POSIX::_SC_CLK_TCK());
    my $sum = 0;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $f, '<', $stat or next;
        my $line = <$f> // next;
        # pid (comm) state ppid ... utime (14) stime (15)
        my @f = split ' ', ($line =~ s/^.*\) //r);
        $sum += $f[11] + $f[12] if $f[1] == $master;
    }
    return $sum / $ticks;
}

sub wrk {
    my ($list, $d) = @_;
    local $ENV{KEYS_FILE} = "$dir/$list.keys";
    local $ENV{WRK_THREADS} = $threads;
    my $out = `wrk -t$threads -c$conns -d${d}s --latency -s $dir/keys.lua http://127.0.0.1:$ENV{BENCH_PORT}/api/x 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($n) = $out =~ /(\d+) requests in/;
    my ($p99) = $out =~ /^\s+99%\s+(\S+)/m;
    my ($non) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "wrk failed:\n$out" unless $rps;
    return { rps => $rps, requests => $n, p99 => $p99 // '?', non2xx => $non // 0 };
}

sub write_file {
    my ($file, $text) = @_;
    open my $f, '>', $file or die "$file: $!";
    print $f $text;
    close $f or die "$file: $!";
}

