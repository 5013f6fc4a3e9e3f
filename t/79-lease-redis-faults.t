#!/usr/bin/perl
# Lease mode with Redis faults: a return that gets no answer (Redis frozen
# past the timeout, the connection closed) is kept and sent again once Redis
# answers: usage equals the calls served; while Redis is frozen, calls of a
# key without a lease get 503 (never hang), and the leases held still serve.
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
my $loc = "        location /x/ { apimon on; apimon_api forecast; apimon_redis_timeout 200ms; proxy_pass http://backend; }\n";
my $n = Apimon::Nginx->new(workers => 2);
$n->start(redis => $r, http => 'apimon_lease 1m time=500ms flush=50ms;', server => $loc);
my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 10);

sub call { $http->get($n->url('/x/a'), { headers => { 'X-API-Key' => $_[0] } })->{status} }

sub usage {
    my ($s) = @_;
    my $month = POSIX::strftime('%Y%m', gmtime);
    my %h = @{ $r->cmd('HGETALL', "apimon:sub:{$s->{id}}:usage:$month") || [] };
    my %u;
    $u{ (split /\|/, $_)[2] } += $h{$_} for keys %h;
    return \%u;
}

my $s = Apimon::Nginx::subscribe($r, 'open');
my $other = Apimon::Nginx::subscribe($r, 'open');
my $served = 0;
for (1 .. 40) { $served++ if call($s->{primary}) == 200 }
is($served, 40, 'served before the fault');

# frozen while the leases expire: their returns time out
$r->kill_stop;
my $t0 = time;
my $st = call($other->{primary});
my $secs = time - $t0;
is($st, 503, 'Redis frozen: a key without a lease gets 503');
cmp_ok($secs, '<', 5, 'and no hang');
sleep 1;
$r->kill_cont;

my $deadline = time + 10;
sleep 0.1 while (usage($s)->{ok} // 0) != 40 && time < $deadline;
is_deeply(usage($s), { ok => 40 }, 'the returns sent again: usage equals the calls served');
like($n->error_log, qr/apimon: lease \S+ return deferred/, 'a return was deferred');

for (1 .. 10) { $served++ if call($s->{primary}) == 200 }
is($served, 50, 'served after the fault');
$n->stop;
is_deeply(usage($s), { ok => 50 }, 'after the quit: usage equals the calls served');

done_testing;
