#!/usr/bin/perl
# Enforcement over HTTP/2 (cleartext, prior knowledge, with curl): statuses,
# headers, parallel clients, a stream reset while its check is in flight.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes qw(sleep);
use Apimon::Redis;
use Apimon::Nginx;

plan skip_all => 'curl with HTTP/2 is needed'
    unless (`curl --version 2>/dev/null` // '') =~ /HTTP2/;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $s = Apimon::Nginx::subscribe($r, 'slow');
my $o = Apimon::Nginx::subscribe($r, 'open');

my $n = Apimon::Nginx->new;
my $p = $n->port('h2');
$n->start(redis => $r, http => <<"HTTP");
    server {
        listen 127.0.0.1:$p http2;
        location / {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }
    }
HTTP

# status and lower-cased headers of each response in curl's output
sub curl {
    my (@args) = @_;
    my $out = `curl -s -i --http2-prior-knowledge @args 2>/dev/null`;
    my @res;
    for my $block (split /(?=^HTTP\/2 )/m, $out) {
        next unless $block =~ /^HTTP\/2 (\d+)/;
        my %h = (status => $1);
        $h{lc $1} = $2 while $block =~ /^([\w-]+): ([^\r\n]*)/mg;
        push @res, \%h;
    }
    return @res;
}

my @res = curl("-H 'X-API-Key: $s->{primary}'", "http://127.0.0.1:$p/a");
is($res[0]{status}, 200, 'h2: allowed');
is($res[0]{ratelimit}, '"plan-rate";r=1;t=1', 'h2: RateLimit');
# (curl 7.88 cannot reuse a prior-knowledge connection: one URL per run)
@res = map { curl("-H 'X-API-Key: $s->{primary}'", "http://127.0.0.1:$p/b$_") } 1 .. 3;
is($res[-1]{status}, 429, 'h2: rate limited');
is($res[-1]{'retry-after'}, 1, 'h2: Retry-After');
like($res[-1]{'content-type'}, qr{application/problem\+json}, 'h2: problem+json');
@res = curl("http://127.0.0.1:$p/c");
is($res[0]{status}, 401, 'h2: missing key');
is($res[0]{'www-authenticate'}, 'ApiKey realm="apimon"', 'h2: WWW-Authenticate');

# 20 clients at once, each checked and counted
my $codes = `for i in \$(seq 1 20); do curl -s -o /dev/null -w '%{http_code}\\n' --http2-prior-knowledge -H 'X-API-Key: $o->{primary}' http://127.0.0.1:$p/p\$i & done; wait`;
is(scalar(grep { $_ eq '200' } split /\n/, $codes), 20, 'h2: 20 parallel clients allowed');

# a stream abandoned while Redis hangs
$r->kill_stop;
system("curl -s --http2-prior-knowledge --max-time 0.3 -H 'X-API-Key: $o->{primary}' http://127.0.0.1:$p/gone >/dev/null 2>&1");
sleep 0.1;
$r->kill_cont;
sleep 0.2;
@res = curl("-H 'X-API-Key: $o->{primary}'", "http://127.0.0.1:$p/after");
is($res[0]{status}, 200, 'h2: after an abandoned stream: 200');

$n->stop;
like($n->access_log, qr{^/gone 499 }m, 'h2: the abandoned stream is logged as 499');

done_testing;
