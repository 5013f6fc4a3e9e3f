#!/usr/bin/perl
# Lease mode: the usage Redis counts equals the calls served after a
# reload (the new workers inherit the zone and return the old leases), a
# worker killed with SIGKILL (its leases, in shared memory, are returned by
# the survivors) and a graceful quit (each worker returns its leases before
# it exits: counted right when nginx is gone).
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX ();
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $loc = "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://backend; }\n";
my $lease = 'apimon_lease 1m;';

sub usage_ok {
    my ($s) = @_;
    my $month = POSIX::strftime('%Y%m', gmtime);
    my %h = @{ $r->cmd('HGETALL', "apimon:sub:{$s->{id}}:usage:$month") || [] };
    my %u;
    $u{ (split /\|/, $_)[2] } += $h{$_} for keys %h;
    return \%u;
}

# until Redis counts $want calls accepted (the leases returned), at most 5 s
sub settled {
    my ($s, $want) = @_;
    my $deadline = time + 5;
    my $u = usage_ok($s);
    while (($u->{ok} // 0) != $want && time < $deadline) {
        sleep 0.05;
        $u = usage_ok($s);
    }
    return $u;
}

# $n calls on $conns keep-alive connections, interleaved; the 200s
sub calls {
    my ($nginx, $key, $n, $conns) = @_;
    my @h = map { HTTP::Tiny->new(keep_alive => 1, timeout => 10) } 1 .. ($conns // 4);
    my $ok = 0;
    for my $i (1 .. $n) {
        my $res = $h[$i % @h]->get($nginx->url('/x/a'), { headers => { 'X-API-Key' => $key } });
        $ok++ if $res->{status} == 200;
    }
    return $ok;
}

sub from_leases {
    my ($nginx) = @_;
    return scalar(() = $nginx->error_log =~ /apimon: served from a lease/g);
}

# reload
{
    my $n = Apimon::Nginx->new(workers => 2);
    $n->start(redis => $r, http => $lease, server => $loc);
    my $s = Apimon::Nginx::subscribe($r, 'open');
    my $served = calls($n, $s->{primary}, 100);
    ok($n->reload, 'reloaded');
    $served += calls($n, $s->{primary}, 100);
    is($served, 200, 'reload: every call served');
    cmp_ok(from_leases($n), '>', 50, 'reload: calls decided from leases');
    is(settled($s, 200)->{ok}, 200, 'reload: usage equals the calls served');
    $n->stop;
    is_deeply(usage_ok($s), { ok => 200 }, 'reload: and stays so after the quit');
}

# a worker killed while it holds leases
{
    my $n = Apimon::Nginx->new(workers => 2);
    $n->start(redis => $r, http => $lease, server => $loc);
    my $s = Apimon::Nginx::subscribe($r, 'open');
    my $served = calls($n, $s->{primary}, 150, 8);
    my @workers = grep { $_ != $n->{pid} } $n->pids;
    is(scalar(@workers), 2, 'SIGKILL: two workers');
    $n->{expected_alerts} = qr/worker process $workers[0] exited on signal 9/;
    kill 'KILL', $workers[0];
    my $deadline = time + 5;
    sleep 0.05 while kill(0, $workers[0]) && time < $deadline;
    # the master makes a new worker; wait for it
    $deadline = time + 5;
    sleep 0.05 while (grep { $_ != $n->{pid} } $n->pids) < 2 && time < $deadline;
    $served += calls($n, $s->{primary}, 50);
    is($served, 200, 'SIGKILL: every call served');
    is(settled($s, 200)->{ok}, 200, 'SIGKILL: usage equals the calls served (the dead worker\'s leases returned)');
    $n->stop;
    is_deeply(usage_ok($s), { ok => 200 }, 'SIGKILL: and stays so after the quit');
}

# graceful quit with leases outstanding: counted right as nginx exits
{
    my $n = Apimon::Nginx->new(workers => 2);
    $n->start(redis => $r, http => 'apimon_lease 1m time=10s flush=5s;', server => $loc);
    my $s = Apimon::Nginx::subscribe($r, 'open');
    my $served = calls($n, $s->{primary}, 90);
    is($served, 90, 'quit: every call served');
    cmp_ok(usage_ok($s)->{ok}, '>', 90, 'quit: leases outstanding before the quit');
    $n->stop;
    is_deeply(usage_ok($s), { ok => 90 }, 'quit: usage equals the calls served once nginx is gone');
}

done_testing;
