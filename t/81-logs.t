#!/usr/bin/perl
# Logs: apimon_log_level for refusals, with the request's context; a Redis
# outage logged once when it starts and once when it ends (its duration and
# the requests it affected), per worker, not on every retry or batch.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes qw(time sleep);
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $key = Apimon::Nginx::subscribe($r, 'open')->{primary};

my $n = Apimon::Nginx->new(workers => 2);
$n->start(redis => $r, http => 'apimon_redis_timeout 300ms;', server => <<'CONF');
        location /default/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }

        location /warn/ {
            apimon on;
            apimon_api forecast;
            apimon_log_level warn;
            proxy_pass http://backend;
        }
CONF

sub call { $n->get($_[0], ($_[1] ? ('X-API-Key' => $_[1]) : ())) }

# error log lines written since $offset
sub since { my $log = $n->error_log; return split /\n/, substr($log, $_[0]) }

# --- apimon_log_level; the request's context in the line
my $off = length $n->error_log;
is(call('/default/a')->{status}, 401, 'missing key: 401');
is(call('/warn/b')->{status}, 401, 'missing key, log level warn: 401');
my @l = grep { /apimon: refused with/ } since($off);
is(scalar @l, 2, 'two refusals logged');
like($l[0], qr/\[info\] .*apimon: refused with 401: missing_key, client: 127\.0\.0\.1, server: localhost, request: "GET \/default\/a HTTP\/1\.1"/,
     'default: [info], with the request context');
like($l[1], qr/\[warn\] .*apimon: refused with 401: missing_key, client: 127\.0\.0\.1, .*request: "GET \/warn\/b HTTP\/1\.1"/,
     'apimon_log_level warn: [warn]');

# --- a frozen Redis: the batch that timed out is logged with a request's context
is(call('/default/c', $key)->{status}, 200, 'Redis up: 200');
$off = length $n->error_log;
$r->kill_stop;
is(call('/default/frozen', $key)->{status}, 503, 'Redis frozen: 503');
$r->kill_cont;
my ($batch) = grep { /key check of \d+ requests failed: redis timeout/ } since($off);
like($batch // '', qr/\[warn\] .*client: 127\.0\.0\.1, .*request: "GET \/default\/frozen HTTP\/1\.1"/,
     'the failed batch: [warn] with the request context');
my $deadline = time + 10;
sleep 0.1 while time < $deadline && call('/default/d', $key)->{status} != 200;
for (1 .. 40) { last if call('/default/d', $key)->{status} == 200 && call('/default/d', $key)->{status} == 200; sleep 0.05 }

# --- an outage: stopped for ~2.5 s (several reconnect attempts), 30 requests
sleep 0.3;
$off = length $n->error_log;
$r->stop;
my $t0 = time;
my %st;
for (1 .. 30) {
    $st{call('/default/e', $key)->{status}}++;
    sleep 0.05;
}
sleep 0.05 while time - $t0 < 2.5;
is_deeply(\%st, { 503 => 30 }, 'Redis stopped: 30 requests, 503');
$r->restart;
$deadline = time + 10;
my ($row, $more) = (0, 0);
while (time < $deadline && $row < 8) {
    my $st = call('/default/f', $key)->{status};
    $more++ if $st == 503;
    $row = $st == 200 ? $row + 1 : 0;
    sleep 0.05;
}
is($row, 8, 'Redis back: 200');
# every worker has reconnected by now (each logs its own end)
$deadline = time + 10;
my @lines;
while (time < $deadline) {
    @lines = since($off);
    last if 2 == grep { /is back: the outage lasted/ } @lines;
    sleep 0.1;
}

my (%start, %end, $affected, @noise);
$affected = 0;
for (@lines) {
    next unless /\[(warn|error|notice|crit|alert)\] (\d+)#\d+: (.*)$/;
    my ($level, $pid, $msg) = ($1, $2, $3);
    next unless $msg =~ /apimon/;
    if ($msg =~ /apimon: redis at 127\.0\.0\.1:\d+ .*; an outage starts/) {
        is($level, 'error', "the start is an [error] ($pid)");
        $start{$pid}++;
    } elsif ($msg =~ /apimon: redis at 127\.0\.0\.1:\d+ is back: the outage lasted (\d+) ms, (\d+) requests got redis_error meanwhile/) {
        ok($1 >= 2000 && $1 < 20000, "the end says how long: $1 ms ($pid)");
        $affected += $2;
        $end{$pid}++;
    } else {
        push @noise, $_;
    }
}
is(scalar keys %start, 2, 'each worker logged the start of the outage');
is_deeply([sort values %start], [1, 1], 'once each');
is_deeply([sort keys %end], [sort keys %start], 'each worker logged its end');
is_deeply([sort values %end], [1, 1], 'once each');
is($affected, 30 + $more, "the ends count the requests that got redis_error (30 + $more while it came back)");
is_deeply(\@noise, [], 'nothing else at warn or above during the outage: no line per retry or batch')
    or diag join "\n", @noise;

$n->stop;
is_deeply([$n->alerts], [], 'no alerts');
done_testing;
