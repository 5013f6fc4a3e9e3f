#!/usr/bin/perl
# Microbenchmark of the check script alone: the Redis CPU time per request
# check, as Redis measures it (INFO commandstats), for batches of 1..N
# requests per EVALSHA, driven by redis-benchmark. The subscription and the
# limits are those of bench/module.pl (plan rate + quota, location rate +
# quota, never refusing).
# usage: perl bench/check-script.pl [batch sizes...]   (default: 1 4 16)
# Environment: BENCH_REQUESTS (checks per size, default 100000), BENCH_SUBS
# (distinct subscriptions the requests of a batch cycle through: 1, as in
# bench/module.pl, or more: a batch then reads and writes each one).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use Apimon::Redis;

my @sizes = @ARGV ? @ARGV : (1, 4, 16);
my $calls = $ENV{BENCH_REQUESTS} || 100000;

system('which redis-benchmark >/dev/null 2>&1') == 0 or die "redis-benchmark is not installed\n";

my $r = Apimon::Redis->start;
$r->apply_catalog(<<'JSON');
{"products": [{"name": "bench", "displayName": "Bench", "apis": ["echo"]}],
 "plans": [{"name": "bench-gold", "product": "bench", "displayName": "Gold",
            "rateLimit": {"limit": 1000000000, "per": "second"},
            "quota": {"limit": 1000000000, "period": "month"},
            "pricing": {"model": "flat", "currency": "usd", "amount": 1000}}]}
JSON
$r->put_developer('bench@example.com', {});
my $nsubs = $ENV{BENCH_SUBS} || 1;
my @subs = map { $r->create_subscription(owner => 'bench@example.com', product => 'bench', plan => 'bench-gold') } 1 .. $nsubs;

# the script must be cached for EVALSHA
my $sha = $r->cmd('SCRIPT', 'LOAD', Apimon::Redis::script_text('check'));

# sanity: one check through the helper
my $c = $r->check(key => $subs[0]{primary}, api => 'echo', loc_rate => [ 1000000000, 1 ],
                  loc_quota => [ 1000000000, 'day' ], scope => 'echo');
die "sanity check: $c->{result}\n" unless $c->{result} eq 'allowed';

printf "check script: Redis CPU per request check (INFO commandstats), %d checks per size, %d subscription(s)\n",
    $calls, $nsubs;
for my $n (@sizes) {
    my (@keys, @argv);
    for my $i (0 .. $n - 1) {
        my $s = $subs[$i % @subs];
        push @keys, $s->{key};
        push @argv, Apimon::Redis::key_digest($s->{primary}), 1;
    }
    unshift @argv, 1, 'echo', 1000000000, 1, 1000000000, 'day', 'echo';   # one location
    $r->cmd('CONFIG', 'RESETSTAT');
    my @cmd = ('redis-benchmark', '-p', $r->port, '-n', int($calls / $n) || 1, '-c', 10, '-P', 1, '-q',
               'EVALSHA', $sha, $n, @keys, 0, @argv);
    my $out = `@{[ join ' ', map { "'$_'" } @cmd ]} 2>&1`;
    my ($rps) = $out =~ /([\d.]+) requests per second/;
    my ($usec, $per) = $r->cmd('INFO', 'commandstats') =~ /^cmdstat_evalsha:calls=\d+,usec=(\d+),usec_per_call=([\d.]+),/m
        or die "no evalsha stats:\n$out";
    printf "  batch %3d: %7.2f us per EVALSHA, %6.2f us per check, %8.0f checks/s through one client set\n",
        $n, $per, $per / $n, ($rps // 0) * $n;
}
$r->stop;
