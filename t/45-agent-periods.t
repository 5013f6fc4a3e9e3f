#!/usr/bin/perl
# Which month is billed: the last closed one by default; an open month is
# refused unless asked for explicitly (--allow-open); malformed and future
# months are refused.  --dry-run prints the exact bodies a real run then
# sends, and changes nothing.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent setup_models agent_env);
use POSIX qw(strftime);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $env = agent_env($r, $stripe);

my @t = gmtime;
my $cur = sprintf('%04d-%02d', $t[5] + 1900, $t[4] + 1);
my ($py, $pm) = ($t[5] + 1900, $t[4]);
($py, $pm) = ($py - 1, 12) if $pm == 0;
my $prev = sprintf('%04d-%02d', $py, $pm);
my $next = sprintf('%04d-%02d', $t[4] == 11 ? $t[5] + 1901 : $t[5] + 1900,
    $t[4] == 11 ? 1 : $t[4] + 2);

my $run = run_agent(env => $env, args => ['bill', '--period', $cur]);
is($run->{rc}, 2, 'open month: exit 2');
like($run->{err}, qr/period \Q$cur\E has not closed .*--allow-open/, 'open month: says how');
is(scalar($stripe->requests), 0, 'open month: no request');

$run = run_agent(env => $env, args => ['bill', '--period', $cur, '--allow-open', '--dry-run']);
is($run->{rc}, 0, 'open month with --allow-open: accepted') or diag $run->{err};
like($run->{err}, qr/billing \Q$cur\E \(dry run\)/, 'open month with --allow-open: billed');

$run = run_agent(env => $env, args => ['bill', '--period', $next]);
is($run->{rc}, 2, 'future month: exit 2');
like($run->{err}, qr/has not started/, 'future month: says so');

for my $bad ('2026-13', '2026-1', 'january', '2026-01-01') {
    $run = run_agent(env => $env, args => ['bill', '--period', $bad]);
    is($run->{rc}, 2, "malformed --period $bad: exit 2");
}

$run = run_agent(env => $env, args => ['bill', '--dry-run']);
is($run->{rc}, 0, 'default period: exit 0');
like($run->{err}, qr/billing \Q$prev\E \(dry run\)/, "default period: the last closed month ($prev)");

# dry run of January: every line, exact bodies, nothing changed
my $before = join "\n", sort @{ $r->cmd('KEYS', '*') };
my $catalog = $r->cmd('HGET', 'apimon:catalog', 'version');
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--dry-run']);
is($run->{rc}, 0, 'dry run: exit 0') or diag $run->{err};
my @lines = split /\n/, $run->{out};
is(scalar @lines, scalar keys %{ $m->{expect} }, 'dry run: one request per line');
like($lines[0], qr/^POST \/v1\/invoiceitems\tIdempotency-Key: apimon-202601-\S+\tcustomer=cus_\w+&amount=\d+&currency=[a-z]{3}&description=\S+&period%5Bstart%5D=\d+&period%5Bend%5D=\d+&metadata%5Bapimon_key%5D=/,
    'dry run: method, key and form body');
is(scalar($stripe->requests), 0, 'dry run: no request to the API');
is(join("\n", sort @{ $r->cmd('KEYS', '*') }), $before, 'dry run: no key created or deleted');
is($r->cmd('EXISTS', 'apimon:bill:202601'), 0, 'dry run: no ledger');
is($r->cmd('EXISTS', 'apimon:bill:lock'), 0, 'dry run: no lock');

# the real run sends exactly those bodies with those keys
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01']);
is($run->{rc}, 0, 'real run: exit 0') or diag $run->{err};
my %sent = map { ("$_->{idempotency_key}\t$_->{body}" => 1) }
    grep { $_->{method} eq 'POST' } $stripe->requests;
my @dry = map { my @f = split /\t/; $f[1] =~ s/^Idempotency-Key: //; "$f[1]\t$f[2]" } @lines;
is(scalar(grep { $sent{$_} } @dry), scalar @dry, 'real run: the same keys and bodies, byte for byte');

done_testing;
