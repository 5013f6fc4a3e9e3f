#!/usr/bin/perl
# Enforcement across a request's life: internal redirects (try_files, index,
# error_page) counted once, error_page for a refusal, a client that goes away
# while its check is in flight, nginx -s reload keeping counters, graceful
# quit with a check in flight.
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
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());

my $n = Apimon::Nginx->new(workers => 2);
my $html = $n->prefix . '/html';
mkdir $html;
mkdir "$html/$_" for qw(idx tf);
for my $f ([ 'idx/index.html', "index page\n" ], [ 'tf/real.txt', "real file\n" ],
           [ 'too-many.json', "{\"custom\":true}\n" ]) {
    open my $fh, '>', "$html/$f->[0]" or die $!;
    print $fh $f->[1];
    close $fh;
}

my $server = <<"CONF";
        root $html;
        apimon_api forecast;

        location /tf/ {
            apimon on;
            try_files \$uri \@back;
        }

        location \@back {
            apimon on;
            proxy_pass http://backend;
        }

        location /idx/ {
            apimon on;
            index index.html;
        }

        location /ep/ {
            apimon on;
            error_page 404 = /fallback/;
        }

        location /fallback/ {
            apimon on;
            proxy_pass http://backend;
        }

        location /refuse/ {
            apimon on;
            error_page 429 /too-many.json;
            proxy_pass http://backend;
        }

        location = /too-many.json {
            apimon on;
        }

        location /any/ {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            apimon on;
            proxy_pass http://backend;
        }

        location /any-deny/ {
            satisfy any;
            deny all;
            apimon on;
            proxy_pass http://backend;
        }

        location /slow/ {
            apimon on;
            apimon_redis_timeout 3s;
            proxy_pass http://backend;
        }
CONF

$n->start(redis => $r, server => $server);

my $day = POSIX::strftime('%Y%m%d', gmtime);
my $month = substr($day, 0, 6);

sub accepted {
    my ($s) = @_;
    return $r->cmd('HGET', Apimon::Redis::sub_key($s->{id}) . ":usage:$month", "$day|forecast|ok") // 0;
}

# --- internal redirects are checked and counted once
my $s = Apimon::Nginx::subscribe($r, 'open');
my $res = $n->get('/tf/real.txt', 'X-API-Key' => $s->{primary});
is($res->{status}, 200, 'try_files, a file: 200');
is($res->{content}, "real file\n", 'try_files: the file');
is(accepted($s), 1, 'try_files, a file: counted once');
ok($res->{headers}{'ratelimit'} // 1, 'try_files: checked');

$res = $n->get('/tf/none', 'X-API-Key' => $s->{primary});
is($res->{status}, 200, 'try_files to a named location: 200');
like($res->{content}, qr/^backend uri=\/tf\/none/, 'try_files: proxied by @back');
is(accepted($s), 2, 'try_files to a named location: counted once');

$res = $n->get('/idx/', 'X-API-Key' => $s->{primary});
is($res->{status}, 200, 'index: 200');
is($res->{content}, "index page\n", 'index: the index file');
is(accepted($s), 3, 'index: counted once');

$res = $n->get('/ep/missing', 'X-API-Key' => $s->{primary});
is($res->{status}, 200, 'error_page 404 = /fallback/: 200');
like($res->{content}, qr/^backend uri=\/fallback\//, 'error_page: proxied by the fallback');
is(accepted($s), 4, 'error_page: counted once');

$res = $n->get('/tf/none');
is($res->{status}, 401, 'try_files without a key: 401 before the redirect');

# --- satisfy any: another access module may let a refused call through
$res = $n->get('/any/x');
is($res->{status}, 200, 'satisfy any + allow: no key, let through by allow');
is($res->{headers}{'www-authenticate'}, undef, 'satisfy any + allow: no WWW-Authenticate');
$res = $n->get('/any-deny/x');
is($res->{status}, 401, 'satisfy any + deny: 401');
is($res->{headers}{'www-authenticate'}, 'ApiKey realm="apimon"', 'satisfy any + deny: WWW-Authenticate');
is($n->get('/any-deny/x', 'X-API-Key' => $s->{primary})->{status}, 200, 'satisfy any + deny: a good key passes');

# --- error_page for a refusal: the page is served with the refusal's headers
my $h = Apimon::Nginx::subscribe($r, 'hourly');
is($n->get('/refuse/x', 'X-API-Key' => $h->{primary})->{status}, 200, 'refuse: first call 200');
$res = $n->get('/refuse/x', 'X-API-Key' => $h->{primary});
is($res->{status}, 429, 'error_page 429: status 429');
is($res->{content}, "{\"custom\":true}\n", 'error_page 429: the custom page');
ok($res->{headers}{'retry-after'} > 0, 'error_page 429: Retry-After');
like($res->{headers}{'ratelimit'} // '', qr/"plan-rate";r=0/, 'error_page 429: RateLimit');
my $refused = $r->cmd('HGET', Apimon::Redis::sub_key($h->{id}) . ":usage:$month", "$day|forecast|rate_limited");
is($refused, 1, 'error_page 429: the refusal counted once');

# --- a client that goes away while its check is in flight
my $a = Apimon::Nginx::subscribe($r, 'open');
my $before = accepted($a);
$r->kill_stop;
my @socks;
for (1 .. 3) {
    my $c = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $n->http_port, Proto => 'tcp')
        or die "connect: $!";
    print $c "GET /slow/abort HTTP/1.1\r\nHost: localhost\r\nX-API-Key: $a->{primary}\r\n\r\n";
    push @socks, $c;
}
sleep 0.3;
close $_ for @socks;           # the clients give up while Redis hangs
sleep 0.3;
$r->kill_cont;                 # the replies arrive for requests that are gone
sleep 0.3;
is($n->get('/slow/x', 'X-API-Key' => $a->{primary})->{status}, 200, 'after aborted clients: 200');
like($n->access_log, qr{^/slow/abort 499 }m, 'aborted clients logged as 499');
# A check still queued in nginx (its worker had a batch in flight) is
# dropped with its client and never reaches Redis; one sent is counted by
# the script, then refunded when its reply finds the request gone.
my $counted = accepted($a) - $before - 1;
is($counted, 0, 'the checks of the clients gone are not counted');

# the same with the reply arriving only after the timeout
$r->kill_stop;
my $c = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $n->http_port, Proto => 'tcp')
    or die "connect: $!";
print $c "GET /fallback/abort2 HTTP/1.1\r\nHost: localhost\r\nX-API-Key: $a->{primary}\r\n\r\n";
sleep 0.2;
close $c;
sleep 0.6;                      # past the default 500 ms timeout
$r->kill_cont;
my $ok = 0;
for (1 .. 40) {
    last if $n->get('/fallback/x', 'X-API-Key' => $a->{primary})->{status} == 200 && ++$ok >= 4;
    sleep 0.1;
}
is($ok, 4, 'after an abort and a timeout: 200 again');

# --- nginx -s reload keeps counters
my $q = Apimon::Nginx::subscribe($r, 'small');
is($n->get('/fallback/x', 'X-API-Key' => $q->{primary})->{status}, 200, 'quota 3: call 1');
is($n->get('/fallback/x', 'X-API-Key' => $q->{primary})->{status}, 200, 'quota 3: call 2');
ok($n->reload(redis => $r, server => $server . "\n        location /new/ { apimon on; proxy_pass http://backend; }\n"),
   'reload with a changed configuration');
is($n->get('/new/x', 'X-API-Key' => $q->{primary})->{status}, 200, 'after reload: call 3 in the new location');
$res = $n->get('/fallback/x', 'X-API-Key' => $q->{primary});
is($res->{status}, 403, 'after reload: call 4 over the quota');
is(($res->{headers}{'ratelimit'} // '') =~ /"plan-quota";r=0/ ? 1 : 0, 1, 'after reload: RateLimit r=0');
ok($n->reload, 'reload with the same configuration');
is($n->get('/fallback/x', 'X-API-Key' => $q->{primary})->{status}, 403, 'second reload: still over the quota');

# --- a bad configuration on reload is refused, the old one keeps running
ok(!$n->reload(redis => $r, server => $server . "\n        apimon_rate 5x/s;\n"), 'reload with a bad line is refused');
is($n->get('/fallback/x', 'X-API-Key' => $s->{primary})->{status}, 200, 'the old configuration still serves');
# (the refused reload logs an [emerg]: checked, then removed from the log)
my $log = $n->error_log;
like($log, qr/\[emerg\].*"apimon_rate": invalid rate "5x\/s"/, 'the refused reload names the directive');
{
    open my $fh, '>', $n->error_log_file or die $!;
    print $fh join("\n", grep { !/\[emerg\]/ } split /\n/, $log), "\n";
    close $fh;
}

# --- graceful quit while a check is in flight: the request ends with 503
$r->kill_stop;
my $pid = fork;
die "fork: $!" unless defined $pid;
if ($pid == 0) {
    my $res = $n->get('/fallback/quit', 'X-API-Key' => $a->{primary});
    POSIX::_exit($res->{status} == 503 ? 0 : 1);
}
sleep 0.2;
my $t0 = time;
$n->stop;
waitpid($pid, 0);
is($? >> 8, 0, 'graceful quit: the request in flight got 503');
ok(time - $t0 < 5, 'graceful quit: nginx exited after the timeout');
$r->kill_cont;

done_testing;
