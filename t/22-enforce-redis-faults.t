#!/usr/bin/perl
# Enforcement when Redis fails: stopped, frozen (SIGSTOP), restarted, its
# script cache flushed; apimon_on_redis_error closed (503) and open.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes qw(time sleep);
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start(aof => 1);
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $s = Apimon::Nginx::subscribe($r, 'open');
my $key = $s->{primary};

my $n = Apimon::Nginx->new(workers => 2);
my $slow = $n->valgrind ? 10 : 1;     # valgrind makes everything slower
my $timeout = 300 * $slow;
$n->start(redis => $r, http => "apimon_redis_timeout ${timeout}ms;", server => <<'CONF');
        location /closed/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }

        location /open/ {
            apimon on;
            apimon_api forecast;
            apimon_on_redis_error open;
            add_header X-Result $apimon_result always;
            proxy_pass http://backend;
        }
CONF

sub call { $n->get($_[0] // '/closed/x', 'X-API-Key' => $key) }

# until $want answers in a row have that status, for at most $secs
sub recovers {
    my ($want, $secs, $path) = @_;
    my $deadline = time + $secs;
    my $row = 0;
    while (time < $deadline) {
        my $res = call($path);
        $row = $res->{status} == $want ? $row + 1 : 0;
        return 1 if $row >= 6;
        sleep 0.05;
    }
    return 0;
}

sub evals {
    my $info = $r->cmd('INFO', 'commandstats');
    return $info =~ /cmdstat_eval:calls=(\d+)/ ? $1 : 0;
}

ok(recovers(200, 5 * $slow), 'Redis up: 200');

# --- SCRIPT FLUSH mid-run: NOSCRIPT, re-sent as EVAL
my $evals = evals();
$r->cmd('SCRIPT', 'FLUSH');
my $ok = 0;
$ok += call()->{status} == 200 for 1 .. 10;
is($ok, 10, 'after SCRIPT FLUSH: every call still 200');
ok(evals() > $evals, 'NOSCRIPT answered by EVAL');
ok($r->cmd('SCRIPT', 'EXISTS', Apimon::Redis::script_sha('check'))->[0], 'EVAL cached the script again');

# --- Redis stopped: 503 at once, or let through with apimon_on_redis_error open
$r->stop;
my $t0 = time;
my $res = call();
is($res->{status}, 503, 'Redis stopped: 503');
is($res->{json}{code}, 'redis_error', 'Redis stopped: problem code redis_error');
my %st;
for (1 .. 20) {
    $res = call();
    $st{$res->{status}}++;
}
is_deeply(\%st, { 503 => 20 }, 'Redis stopped: every call 503');
ok(time - $t0 < 2 * $slow, 'Redis stopped: 21 calls answered promptly (' . int((time - $t0) * 1000) . ' ms)');

$res = call('/open/x');
is($res->{status}, 200, 'apimon_on_redis_error open: let through');
is($res->{headers}{'x-result'}, 'redis_error', 'apimon_on_redis_error open: $apimon_result redis_error');
like($res->{content}, qr/^backend/, 'apimon_on_redis_error open: proxied');

# --- restarted: the connection comes back (script cache empty)
$r->restart;
ok(recovers(200, 8 * $slow), 'Redis restarted: 200 again');
is(call('/open/x')->{headers}{'x-result'}, 'allowed', 'open location: allowed again');

# --- frozen: the first calls wait out the timeout, then the circuit opens
$r->kill_stop;
$t0 = time;
my @ms;
%st = ();
for (1 .. 12) {
    my $res = call();
    $st{$res->{status}}++;
    push @ms, $res->{ms};
}
my $total = time - $t0;
is_deeply(\%st, { 503 => 12 }, 'Redis frozen: 503');
my @sorted = sort { $a <=> $b } @ms;
ok($sorted[-1] < 1500 * $slow, "Redis frozen: no call waits much longer than the timeout (max $sorted[-1] ms)");
ok($total < 3 * $slow, 'Redis frozen: 12 calls within ' . int($total * 1000) . ' ms (circuit breaker)');
ok($sorted[5] < 100 * $slow, "Redis frozen: most calls fail fast (median $sorted[5] ms)");

$r->kill_cont;
ok(recovers(200, 8 * $slow), 'Redis thawed: 200 again');

# --- stopped for a while, then started: backoff keeps retrying
$r->stop;
is(call()->{status}, 503, 'stopped again: 503');
sleep 1.5;
$r->restart;
ok(recovers(200, 8 * $slow), 'started after a pause: 200 again');

$n->stop;
my $log = $n->error_log;

# --- nginx starts while Redis hangs: the connect times out, then recovers
$r->kill_stop;
my $n2 = Apimon::Nginx->new(workers => 1);
my $ct = 400 * $slow;
$n2->start(redis_conf => 'apimon_redis 127.0.0.1:' . $r->port . " connect_timeout=${ct}ms;",
           http => "apimon_redis_timeout ${timeout}ms;", server => <<'CONF');
        location /closed/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }
CONF
$t0 = time;
$res = $n2->get('/closed/x', 'X-API-Key' => $key);
is($res->{status}, 503, 'started while Redis hangs: 503');
ok(time - $t0 < 2 * $slow, 'started while Redis hangs: within the timeout');
sleep 0.5 * $slow;
$r->kill_cont;
{
    my $deadline = time + 8 * $slow;
    my $row = 0;
    while (time < $deadline && $row < 4) {
        $row = $n2->get('/closed/x', 'X-API-Key' => $key)->{status} == 200 ? $row + 1 : 0;
        sleep 0.05;
    }
    is($row, 4, 'Redis answers again: 200');
}
like($n2->error_log, qr/apimon: redis at 127\.0\.0\.1:\d+ did not answer: connect timeout/, 'connect timeout logged');

# quitting while a connect hangs: no alert, no leak
$r->kill_stop;
$n2->reload;
$n2->stop;
$r->kill_cont;
like($log, qr/apimon: redis at 127\.0\.0\.1:\d+ lost the connection/, 'the lost connection is logged');
like($log, qr/apimon: redis at 127\.0\.0\.1:\d+ timed out: no reply in time, connection closed/, 'the timeout is logged');
like($log, qr/apimon: redis at 127\.0\.0\.1:\d+ is back: the outage lasted \d+ ms/, 'the reconnection is logged');

done_testing;
