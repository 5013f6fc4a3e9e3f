#!/usr/bin/perl
# Enforcement: a check that got no answer is not counted. The check script
# counts a call when it runs; when its reply finds the request gone (client
# closed: 499), or never comes (apimon_redis_timeout while Redis is frozen,
# a connection cut after the script ran), nginx refunds what it counted:
# usage and quota as the management API reads them, and the rate window.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX ();
use IO::Socket::IP;
use IO::Select;
use Time::HiRes qw(time sleep);
use File::Spec;
use Apimon::Redis;
use Apimon::Nginx;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(<<'JSON');
{
  "products": [ { "name": "weather", "displayName": "Weather", "apis": ["forecast"] } ],
  "plans": [
    { "name": "rq", "product": "weather", "rateLimit": { "limit": 10, "per": "hour" },
      "quota": { "limit": 1000, "period": "month" }, "pricing": { "model": "free" } }
  ]
}
JSON

# A TCP proxy in front of Redis that, once told to (a file), swallows the
# next reply and closes both sides: a connection cut after the command ran.
my $cut = File::Spec->catfile($r->dir, 'cut');
my $listen = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 16,
                                 ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
my $proxy_port = $listen->sockport;
my $parent = $$;
my $proxy = fork;
die "fork: $!" unless defined $proxy;
if ($proxy == 0) {
    $SIG{TERM} = sub { POSIX::_exit(0) };
    my $sel = IO::Select->new($listen);
    my %peer;
    while (1) {
        POSIX::_exit(0) if getppid() != $parent;     # the test is gone
        for my $fh ($sel->can_read(0.5)) {
            if ($fh == $listen) {
                my $c = $listen->accept or next;
                my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $r->port,
                                            Proto => 'tcp') or do { close $c; next };
                $peer{$c} = [ $s, 'up' ];
                $peer{$s} = [ $c, 'down' ];
                $sel->add($c, $s);
                next;
            }
            my ($other, $dir) = @{ $peer{$fh} || next };
            my $n = sysread($fh, my $buf, 65536);
            if (!$n || ($dir eq 'down' && unlink $cut)) {
                $sel->remove($fh, $other);
                delete @peer{ $fh, $other };
                close $fh;
                close $other;
                next;
            }
            syswrite $other, $buf;
        }
    }
}
close $listen;

my $n = Apimon::Nginx->new(workers => 1);
my $tokens = $n->prefix . '/admin.tokens';
{
    open my $fh, '>', $tokens or die "$tokens: $!";
    print $fh "portal:$Apimon::Admin::TOKEN\n";
    close $fh;
}
my $slow = $n->valgrind ? 10 : 1;
my $timeout = 300 * $slow;
$n->start(redis_conf => "apimon_redis 127.0.0.1:$proxy_port;", server => <<"CONF");
        apimon_api forecast;

        location /apimon/ {
            apimon_admin;
            apimon_admin_token_file $tokens;
        }

        location /wait/ {
            apimon on;
            apimon_redis_timeout 5s;
            proxy_pass http://backend;
        }

        location /closed/ {
            apimon on;
            apimon_redis_timeout ${timeout}ms;
            proxy_pass http://backend;
        }

        location /open/ {
            apimon on;
            apimon_redis_timeout ${timeout}ms;
            apimon_on_redis_error open;
            proxy_pass http://backend;
        }
CONF
my $api = Apimon::Admin->new(nginx => $n);
my $s = Apimon::Nginx::subscribe($r, 'rq');
my $SUB = "/developers/dev\@example.com/subscriptions/$s->{id}";
my $today = POSIX::strftime('%Y-%m-%d', gmtime);

# what the management API says: accepted calls today, quota used
sub books {
    my $u = $api->get("$SUB/usage?from=$today&to=$today")->{json};
    my $q = $api->get($SUB)->{json}{quota};
    return { accepted => $u->{total}{accepted}, refused => $u->{total}{refused},
             used => $q->{used} };
}

sub refunds { scalar(() = $n->error_log =~ /apimon: refunded (\d+) checks that got no answer/g) }

# until the error log shows $want refunds, for at most $secs
sub wait_refunds {
    my ($want, $secs) = @_;
    my $deadline = time + $secs * $slow;
    sleep 0.05 while refunds() < $want && time < $deadline;
    return refunds();
}

# until a call is answered 200 again
sub recovers {
    for (1 .. 100) {
        return 1 if $n->get('/wait/x', 'X-API-Key' => $s->{primary})->{status} == 200;
        sleep 0.05;
    }
    return 0;
}

sub rate_r {
    my ($res) = @_;
    return ($res->{headers}{ratelimit} // '') =~ /"plan-rate";r=(\d+)/ ? $1 : undef;
}

is($n->get('/wait/x', 'X-API-Key' => $s->{primary})->{status}, 200, 'a first call: 200');
is_deeply(books(), { accepted => 1, refused => 0, used => 1 }, 'booked: 1 call');
my $done = 0;

# --- (a) the clients go away while their check waits for a frozen Redis
$r->kill_stop;
my @socks;
for (1 .. 3) {
    my $c = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $n->http_port, Proto => 'tcp')
        or die "connect: $!";
    print $c "GET /wait/gone HTTP/1.1\r\nHost: localhost\r\nX-API-Key: $s->{primary}\r\n\r\n";
    push @socks, $c;
}
sleep 0.3;
close $_ for @socks;
sleep 0.2;
$r->kill_cont;                  # the script runs, the reply finds nobody
is(wait_refunds(++$done, 5), $done, 'clients gone: the batch is refunded');
like($n->access_log, qr{^/wait/gone 499 }m, 'the clients gone: 499');
is_deeply(books(), { accepted => 1, refused => 0, used => 1 }, 'clients gone: nothing booked');
my $res = $n->get('/wait/x', 'X-API-Key' => $s->{primary});
is(rate_r($res), 8, 'the rate window gave their slots back (2 of 10 used)');
is_deeply(books(), { accepted => 2, refused => 0, used => 2 }, 'the next call is booked');

# --- (b) apimon_redis_timeout fires while Redis is frozen, then it thaws
my $booked = 2;
for my $loc ([ 'closed', 503 ], [ 'open', 200 ]) {
    my ($where, $status) = @$loc;
    $r->kill_stop;
    is($n->get("/$where/x", 'X-API-Key' => $s->{primary})->{status}, $status,
       "$where: timeout while Redis is frozen: $status");
    $r->kill_cont;              # the script runs on the dropped connection
    is(wait_refunds(++$done, 8), $done, "$where: refunded after the reconnect");
    ok(recovers(), "$where: 200 again");
    $booked++;                  # the call that answered 200
    is_deeply(books(), { accepted => $booked, refused => 0, used => $booked },
              "$where: the call that timed out is not booked");
}

# --- (c) the connection is cut after the script ran: no reply ever comes
open my $fh, '>', $cut or die "$cut: $!";
close $fh;
$res = $n->get('/wait/x', 'X-API-Key' => $s->{primary});
is($res->{status}, 503, 'connection cut: 503');
ok(!-e $cut, 'the proxy swallowed the reply');
is(wait_refunds(++$done, 8), $done, 'connection cut: refunded after the reconnect');
ok(recovers(), 'connection cut: 200 again');
$booked++;
is_deeply(books(), { accepted => $booked, refused => 0, used => $booked },
          'connection cut: the call is not booked');

# --- a refund is done once, and deletes the batch's record
is(refunds(), $done, 'no other refund');
is(scalar(grep { ($r->cmd('GET', $_) // '') =~ /\A\S+\n\d+\n/ } @{ $r->cmd('KEYS', 'apimon:batch:*') }),
   scalar(@{ $r->cmd('KEYS', 'apimon:batch:*') }), 'the records left are well formed');

$n->stop;
kill 'TERM', $proxy;
waitpid($proxy, 0);
done_testing;
