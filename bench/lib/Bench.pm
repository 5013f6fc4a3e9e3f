package Bench;

# What the module benchmarks share: an nginx of their own (no debug log,
# unlike the test harness), free ports, number formatting. Core Perl only.

use strict;
use warnings;
use IO::Socket::IP;
use POSIX ();
use Time::HiRes qw(sleep);

# the top of an nginx.conf: the module, workers, logs, the http block opened
# with apimon_redis and a local upstream "backend" on port $up
sub nginx_conf_head {
    my (%o) = @_;
    return <<"CONF";
load_module $o{build}/ngx_http_apimon_module.so;
worker_processes $o{workers};
daemon off;
pid $o{dir}/logs/nginx.pid;
error_log $o{dir}/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $o{dir}/body;
    proxy_temp_path $o{dir}/proxy;
    apimon_redis 127.0.0.1:$o{rport};

    upstream backend { server 127.0.0.1:$o{up}; keepalive 64; }
    server { listen 127.0.0.1:$o{up}; location / { return 200 "ok\\n"; } }
CONF
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
