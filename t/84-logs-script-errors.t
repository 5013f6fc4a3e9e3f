#!/usr/bin/perl
# Redis refusing the check script (out of memory): logged once when it
# starts and once when a check works again (its duration, the requests that
# failed), not once per batch.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $key = Apimon::Nginx::subscribe($r, 'open')->{primary};

my $n = Apimon::Nginx->new(workers => 1);
$n->start(redis => $r, server => <<'CONF');
        location /api/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }
CONF

sub call { $n->get($_[0], 'X-API-Key' => $key) }

is(call('/api/a')->{status}, 200, 'Redis up: 200');
my $off = length $n->error_log;

$r->cmd('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
$r->cmd('CONFIG', 'SET', 'maxmemory', '1');
my %st;
$st{call('/api/oom')->{status}}++ for 1 .. 25;
is_deeply(\%st, { 503 => 25 }, 'Redis out of memory: 25 x 503');
$r->cmd('CONFIG', 'SET', 'maxmemory', '0');
is(call('/api/b')->{status}, 200, 'memory again: 200');

my @l = grep { /\[(?:warn|error|crit|alert)\]/ } split /\n/, substr($n->error_log, $off);
my @start = grep { /apimon: the check script failed: (?:ERR )?OOM .*logged once/ } @l;
my @end = grep { /apimon: the check script works again after \d+ ms: (\d+) requests got redis_error meanwhile/ } @l;
is(scalar @start, 1, 'the failure is logged once');
like($start[0] // '', qr/client: 127\.0\.0\.1, .*request: "GET \/api\/oom/, 'with a request\'s context');
is(scalar @end, 1, 'its end is logged once');
my ($count) = ($end[0] // '') =~ /(\d+) requests got/;
is($count, 25, 'the end counts the 25 requests');
is(scalar @l, 2, "nothing else at warn or above") or diag join "\n", @l;

$n->stop;
is_deeply([$n->alerts], [], 'no alerts');
done_testing;
