package Bench;

# What the module benchmarks share: an nginx of their own (no debug log,
# unlike the test harness), free ports, number formatting, CPU time from
# /proc, nginx's request counter, subscriptions made in bulk. Core Perl only.

use strict;
use warnings;
use IO::Socket::IP;
use HTTP::Tiny;
use POSIX ();
use Time::HiRes qw(sleep);
use Apimon::Redis;

# the top of an nginx.conf: the module, workers, logs, the http block opened
# with apimon_redis and an upstream "backend" on port $up, served by this
# nginx unless external => 1 (then kept alive: keepalive => connections)
sub nginx_conf_head {
    my (%o) = @_;
    my $module = $o{module} || "$o{build}/ngx_http_apimon_module.so";
    my $backend = $o{external}
        ? "upstream backend { server 127.0.0.1:$o{up}; keepalive $o{keepalive}; keepalive_requests 100000; }"
        : "upstream backend { server 127.0.0.1:$o{up}; keepalive 64; }\n"
          . "    server { listen 127.0.0.1:$o{up}; location / { return 200 \"ok\\n\"; } }";
    return "load_module $module;\n" . conf_top(%o) . <<"CONF";
    proxy_temp_path $o{dir}/proxy;
    apimon_redis 127.0.0.1:$o{rport};

    $backend
CONF
}

# the upstream of bench/module.pl, an nginx of its own (no module): 200 "ok"
# on $port, its request counter (stub_status) on $status
sub upstream_conf {
    my (%o) = @_;
    return conf_top(%o) . <<"CONF";
    server {
        listen 127.0.0.1:$o{port};
        keepalive_requests 100000;
        location / { return 200 "ok\\n"; }
    }
    server { listen 127.0.0.1:$o{status}; location / { stub_status; } }
}
CONF
}

# workers, logs, the http block opened
sub conf_top {
    my (%o) = @_;
    return <<"CONF";
worker_processes $o{workers};
daemon off;
pid $o{dir}/logs/nginx.pid;
error_log $o{dir}/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $o{dir}/body;
CONF
}

# nginx's count of requests so far (stub_status), the one asking included
sub nginx_requests {
    my ($status_port) = @_;
    my $r = HTTP::Tiny->new(timeout => 5)->get("http://127.0.0.1:$status_port/");
    my ($n) = $r->{success} ? $r->{content} =~ /^\s*\d+\s+\d+\s+(\d+)\s*$/m : ();
    die "stub_status on $status_port: $r->{status} $r->{content}\n" unless defined $n;
    return $n;
}

my $TICKS = POSIX::sysconf(POSIX::_SC_CLK_TCK());

# CPU seconds (user + system, all threads) of a process
sub proc_cpu {
    my ($pid) = @_;
    open my $f, '<', "/proc/$pid/stat" or return 0;
    my @f = split ' ', (<$f> =~ s/^.*\) //r);   # from the state on: utime is 12th, stime 13th
    return ($f[11] + $f[12]) / $TICKS;
}

# the worker processes of an nginx master
sub children {
    my ($master) = @_;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $f, '<', $stat or next;
        my $line = <$f> // next;
        my @f = split ' ', ($line =~ s/^.*\) //r);
        push @pids, $stat =~ m{/proc/(\d+)/} if $f[1] == $master;
    }
    return @pids;
}

# the machine's CPU seconds so far (/proc/stat): busy (user, nice, system,
# irq, softirq; the kernel charges irq and softirq ticks to the task they
# interrupt, so the processes' own times hold them too), steal
sub machine_cpu {
    open my $f, '<', '/proc/stat' or die "/proc/stat: $!";
    my (undef, @t) = split ' ', scalar <$f>;
    return { busy => ($t[0] + $t[1] + $t[2] + $t[5] + $t[6]) / $TICKS, steal => ($t[7] // 0) / $TICKS };
}

# $n subscriptions of $o{plan} for developer $o{owner}, made by the
# subscription_create script like create_subscription (t/lib/Apimon/Redis.pm)
# does, but pipelined 1000 at a time (the harness's own RESP encoding and
# reader); each { id, key, primary } with its primary key only
sub provision {
    my ($redis, $n, %o) = @_;
    my $sha = $redis->cmd('SCRIPT', 'LOAD', Apimon::Redis::script_text('subscription_create'));
    my @subs;
    while (@subs < $n) {
        my @chunk = map {
            my $id = Apimon::Redis::new_uuid();
            { id => $id, key => Apimon::Redis::sub_key($id), primary => Apimon::Redis::new_key($id) }
        } 1 .. ($n - @subs < 1000 ? $n - @subs : 1000);
        my $req = join '', map {
            Apimon::Redis::_encode('EVALSHA', $sha, 1, $_->{key},
                Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => $o{owner}),
                $_->{id}, $o{product}, $o{plan}, Apimon::Redis::key_digest($_->{primary}), '', 0)
        } @chunk;
        pipeline($redis, $req, scalar @chunk);
        push @subs, @chunk;
    }
    return @subs;
}

# sends RESP text of $n commands at once and reads their replies; dies on an error
sub pipeline {
    my ($redis, $req, $n) = @_;
    my $sock = $redis->_sock;
    while (length $req) {
        my $w = syswrite($sock, $req) // die "redis write: $!\n";
        substr($req, 0, $w, '');
    }
    my @r = map { $redis->_read } 1 .. $n;
    for (@r) { die 'redis: ' . $_->message . "\n" if Apimon::Redis::is_error($_) }
    return @r;
}

# starts nginx -p $dir -c $dir/nginx.conf, waits for $port; returns the pid
sub start_nginx {
    my ($dir, $port) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', "$dir/logs/stdout"; open STDERR, '>&', \*STDOUT;
        exec 'nginx', '-p', "$dir/", '-c', "$dir/nginx.conf" or POSIX::_exit(127);
    }
    wait_port($port, $dir);
    return $pid;
}

sub fmt { my $n = sprintf '%.0f', shift; 1 while $n =~ s/^(\d+)(\d{3})/$1,$2/; $n }

sub free_port {
    my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 1) or die $!;
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub wait_port {
    my ($p, $dir) = @_;
    for (1 .. 200) {
        my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $p, Timeout => 1);
        return if $s;
        sleep 0.05;
    }
    die "nginx did not start:\n" . `cat $dir/logs/stdout $dir/logs/error.log`;
}

1;
