#!/usr/bin/perl
# apimon_redis with a host name: resolved when the configuration is loaded
# (as upstream servers are), never in a worker. localhost works, at start and
# at a reload; a name that does not resolve is a configuration error naming
# the directive, the name, the file and the line, at start and at a reload
# (the old configuration keeps serving). With strace here, the workers are
# watched through a Redis restart: they reconnect to the numeric address and
# never open /etc/hosts or talk to a DNS server.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $key = Apimon::Nginx::subscribe($r, 'open')->{primary};
my $port = $r->port;
my $loc = "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://backend; }\n";

# a name that does not resolve: refused at start
for my $addr ('no-such-host.invalid', "no-such-host.invalid:$port db=1") {
    my $n = Apimon::Nginx->new(workers => 1);
    my $started = eval { $n->start(redis_conf => "apimon_redis $addr;", server => $loc); 1 };
    $n->stop if $started;
    ok(!$started, "$addr: nginx does not start");
    like($@, qr/\[emerg\].*"apimon_redis": invalid address "no-such-host\.invalid(:$port)?" \(host not found\) in \S+nginx\.conf:\d+/,
         "$addr: the directive, the name, file and line");
}

# localhost: resolved at start, calls go through
my $n = Apimon::Nginx->new(workers => 2);
ok(eval { $n->start(redis_conf => "apimon_redis localhost:$port;", server => $loc); 1 },
   'localhost:port: nginx starts') or diag $@;
is($n->get('/x/a', 'X-API-Key' => $key)->{status}, 200, 'localhost:port: the call is checked and let through');

# a reload to a name that does not resolve is refused; the old one serves on
my $conf = $n->{conf};
ok(!$n->reload(%$conf, redis_conf => "apimon_redis no-such-host.invalid:$port;"),
   'reload to a name that does not resolve: refused');
like($n->error_log, qr/\[emerg\].*"apimon_redis": invalid address "no-such-host\.invalid:$port" \(host not found\) in \S+nginx\.conf:\d+/,
     'reload: the directive, the name, file and line');
is($n->get('/x/a', 'X-API-Key' => $key)->{status}, 200, 'reload refused: the old configuration serves');
# the refused reload's [emerg] is expected: checked, then removed for stop's check
{
    my $log = $n->error_log;
    open my $fh, '>', $n->error_log_file or die $!;
    print $fh join("\n", grep { !/\[emerg\]/ } split /\n/, $log), "\n";
    close $fh;
}

# a reload to localhost with a database: resolved again, the new workers use it
ok($n->reload(%$conf, redis_conf => "apimon_redis localhost:$port db=0 connect_timeout=2s;"),
   'reload to localhost db=0: accepted');
is($n->get('/x/a', 'X-API-Key' => $key)->{status}, 200, 'after the reload: 200');

# the workers never resolve: watch them while Redis restarts and they reconnect
SKIP: {
    skip 'no strace here', 4 if system('command -v strace >/dev/null 2>&1') != 0;
    skip 'under valgrind', 4 if $n->valgrind;
    my ($master, @workers) = $n->pids;
    @workers = grep { $_ != $master } ($master, @workers);
    my $trace = $n->prefix . '/logs/strace.log';
    my $st = fork // die "fork: $!";
    if ($st == 0) {
        open STDERR, '>', '/dev/null';
        exec('strace', '-f', '-qq', '-e', 'trace=openat,connect', '-o', $trace,
             map { ('-p', $_) } @workers) or POSIX::_exit(127);
    }
    # attached when the workers' syscalls appear in the trace
    my $t0 = time;
    while (time - $t0 < 5) {
        $n->get('/x/a', 'X-API-Key' => $key);
        last if -s $trace;
        sleep 0.1;
    }
    $r->restart;
    my $ok = 0;
    $t0 = time;
    while (time - $t0 < 10) {
        $ok++ if $n->get('/x/a', 'X-API-Key' => $key)->{status} == 200;
        last if $ok >= 4;
        sleep 0.1;
    }
    kill 'INT', $st;
    waitpid($st, 0);
    my $log = do { local $/; open my $f, '<', $trace; <$f> // '' };
    ok(-s $trace, 'strace watched the workers') or diag "strace saw nothing";
    cmp_ok($ok, '>=', 4, 'after the Redis restart the workers reconnected: 200');
    like($log, qr/connect\(\d+, \{sa_family=AF_INET, sin_port=htons\($port\), sin_addr=inet_addr\("127\.0\.0\.1"\)\}/,
         'the workers connect to the address resolved at load time');
    my @resolving = grep { m{/etc/hosts|/etc/resolv\.conf|/etc/nsswitch\.conf|/etc/gai\.conf|htons\(53\)} }
        split /\n/, $log;
    is_deeply(\@resolving, [], 'no name resolution in a worker (no hosts file, no DNS)');
}
$n->stop;

done_testing;
