#!/usr/bin/perl
# Enforcement: a refund Redis refuses for now is not lost. The check ran
# and counted, its reply found the client gone (499), and Redis answers the
# refund with an error: a transient one (READONLY: the instance was made a
# replica, as in a failover) keeps the refund, which is sent again after a
# backoff until Redis takes it, and the counts come back exact; a
# permanent one (the script fails: WRONGTYPE) is logged at error with the
# batch id, and not sent again. Under maxmemory with noeviction the refund
# goes through (Redis refuses a script for memory only at its first write,
# and check_refund's first is the delete of its record), while a new check
# is refused (503) and counts nothing.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX ();
use IO::Socket::IP;
use Time::HiRes qw(time sleep);
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(<<'JSON');
{
  "products": [ { "name": "weather", "displayName": "Weather", "apis": ["forecast"] } ],
  "plans": [
    { "name": "rq", "product": "weather", "rateLimit": { "limit": 100, "per": "hour" },
      "quota": { "limit": 1000, "period": "month" }, "pricing": { "model": "free" } }
  ]
}
JSON

my $n = Apimon::Nginx->new(workers => 1);
my $slow = $n->valgrind ? 10 : 1;
$n->start(redis => $r, server => <<"CONF");
        location /wait/ {
            apimon on;
            apimon_api forecast;
            apimon_redis_timeout 5s;
            proxy_pass http://backend;
        }
CONF
my $s = Apimon::Nginx::subscribe($r, 'rq');
my $month = POSIX::strftime('%Y%m', gmtime);
my $uk = "$s->{key}:usage:$month";

# accepted calls (usage) and the month's quota count, as Redis holds them
sub books {
    my %u = @{ $r->cmd('HGETALL', $uk) };
    my $ok = 0;
    $ok += $u{$_} for grep { /\|ok$/ } keys %u;
    my ($used) = ($r->cmd('HGET', $s->{key}, 'c:quota:plan') // '') =~ /:(\d+)$/;
    return { accepted => $ok, used => $used // 0 };
}

sub count_log { my ($re) = @_; scalar(() = $n->error_log =~ /$re/g) }

# until the error log has $want lines matching $re, for at most $secs
sub wait_log {
    my ($re, $want, $secs) = @_;
    my $deadline = time + $secs * $slow;
    sleep 0.05 while count_log($re) < $want && time < $deadline;
    return count_log($re);
}

sub resp { join '', map { "*" . @$_ . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @$_) } @_ }

# A check that runs and counts while its client goes away: Redis frozen,
# the client sends and closes; then, before the reply reaches nginx (the
# commands queued on another connection run right after the check, which
# was queued first), Redis gets @cmds. Returns that connection.
sub gone_then {
    my (@cmds) = @_;
    my $c = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $r->port, Proto => 'tcp')
        or die "connect: $!";
    $r->kill_stop;
    my $h = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $n->http_port, Proto => 'tcp')
        or die "connect: $!";
    print $h "GET /wait/gone HTTP/1.1\r\nHost: localhost\r\nX-API-Key: $s->{primary}\r\n\r\n";
    sleep 0.3 * $slow;
    close $h;
    sleep 0.2 * $slow;
    syswrite $c, resp(@cmds);
    sleep 0.1;
    $r->kill_cont;
    return $c;
}

my $refunded = qr/apimon: refunded 1 checks that got no answer/;
my $again = qr/\[warn\] .*apimon: the refund of batch \S+ is tried again in \d+ ms: (?:ERR )?READONLY /;

is($n->get('/wait/x', 'X-API-Key' => $s->{primary})->{status}, 200, 'a first call: 200');
is_deeply(books(), { accepted => 1, used => 1 }, 'booked: 1 call');

# --- a transient error: READONLY until the instance is a master again
my $dead = Apimon::Redis::free_port();
my $c = gone_then([ 'REPLICAOF', '127.0.0.1', $dead ]);
ok(wait_log($again, 1, 5), 'READONLY: the refund is kept and tried again later')
    or diag $n->error_log;
is_deeply(books(), { accepted => 2, used => 2 }, 'meanwhile the call is still counted');
ok(wait_log($again, 2, 5) >= 2, 'and tried again, with a backoff');
is(count_log($refunded), 0, 'not refunded while Redis is a replica');
$r->cmd('REPLICAOF', 'NO', 'ONE');
is(wait_log($refunded, 1, 10), 1, 'a master again: refunded');
is_deeply(books(), { accepted => 1, used => 1 }, 'the counts are exact again');
like($n->access_log, qr{^/wait/gone 499 }m, 'the client gone: 499');
close $c;
is($n->get('/wait/x', 'X-API-Key' => $s->{primary})->{status}, 200, 'the next call: 200');
is_deeply(books(), { accepted => 2, used => 2 }, '... and booked');

# --- out of memory (maxmemory, noeviction) once the check ran
$c = gone_then([ 'CONFIG', 'SET', 'maxmemory', '1' ]);
is(wait_log($refunded, 2, 10), 2, 'maxmemory reached: the refund goes through');
is_deeply(books(), { accepted => 2, used => 2 }, 'the counts are exact');
is($n->get('/wait/x', 'X-API-Key' => $s->{primary})->{status}, 503, 'a new check under maxmemory: 503');
like($n->error_log, qr/\[error\] .*apimon: the check script failed: .*OOM /, '... logged as OOM');
$r->cmd('CONFIG', 'SET', 'maxmemory', '0');
is_deeply(books(), { accepted => 2, used => 2 }, 'the refused check counted nothing');
is($n->get('/wait/x', 'X-API-Key' => $s->{primary})->{status}, 200, 'the limit lifted: 200');
is_deeply(books(), { accepted => 3, used => 3 }, '... and booked');
close $c;

# --- a permanent error: the refund script fails (its usage hash replaced)
$c = gone_then([ 'DEL', $uk ], [ 'SET', $uk, 'not a hash' ]);
my $failed = qr/\[error\] .*apimon: the refund of batch \S+:\d+:\d+ failed, what it counted stays counted: .*WRONGTYPE/;
is(wait_log($failed, 1, 5), 1, 'WRONGTYPE: logged at error with the batch id');
sleep 0.5 * $slow;
is(count_log($failed), 1, 'not sent again');
is(count_log(qr/tried again in \d+ ms: .*WRONGTYPE/), 0, 'not retried');
close $c;
$r->cmd('DEL', $uk);

$n->stop;
done_testing;
