#!/usr/bin/perl
# The agent bills by Redis's clock (the one that stamps usage days), not by
# its host's: the agent runs under libfaketime with a clock at the other
# side of a month boundary, and must still bill by Redis's month.  A default
# run bills every closed month not yet done, never skipping one; a run too
# near the end of a month it bills is refused (exit 5).
use strict;
use warnings;
use Test::More;
use POSIX qw(strftime floor);
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent agent_env ms make_calls);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();
my ($libft) = grep { -e } map { "/usr/lib/$_/faketime/libfaketime.so.1" }
    qw(x86_64-linux-gnu aarch64-linux-gnu);
plan skip_all => 'libfaketime not installed (.ci/packages)' unless $libft;
plan skip_all => 'valgrind run' if $ENV{APIMON_VALGRIND};

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;

# Redis's clock and the months around it
my ($sec) = @{ $r->cmd('TIME') };
my $now = $sec * 1000;
sub month_of { my @t = gmtime(floor($_[0] / 1000)); sprintf('%04d-%02d', $t[5] + 1900, $t[4] + 1) }
sub start_of { ms("$_[0]-01") }
sub shift_month {
    my ($m, $n) = @_;
    my ($y, $mo) = split /-/, $m;
    my $k = $y * 12 + $mo - 1 + $n;
    return sprintf('%04d-%02d', int($k / 12), $k % 12 + 1);
}
my $cur = month_of($now);
my @prev = map { shift_month($cur, -$_) } 1 .. 3;       # m-1, m-2, m-3
my $next = shift_month($cur, 1);
my $since_boundary = $now - start_of($cur);
note("Redis's clock: " . strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $sec) . ", month $cur");

# the agent's own clock, set by libfaketime; FAKETIME is read as UTC
sub at_env {
    my ($when, %o) = @_;
    return agent_env($r, $stripe, LD_PRELOAD => $libft, FAKETIME => "\@$when",
        FAKETIME_DONT_FAKE_MONOTONIC => 1, TZ => 'UTC', %o);
}
sub billed { my ($err) = @_; return [ $err =~ /billing (\d{4}-\d\d)/g ] }

# --- subscriptions since m-3: a flat fee (ann), metered usage (bob), and
# carl, in effect only in m-2, whose owner has no customer at first
my $t0 = start_of($prev[2]);
$r->apply_catalog(Apimon::Agent::models_catalog(), $t0);
for my $who (qw(ann bob carl)) {
    $r->put_developer("$who\@example.com", { firstName => $who, lastName => 'X',
        userName => $who }, now => $t0);
}
$r->set_customer('developer', 'ann@example.com', 'cus_ann', $t0);
$r->set_customer('developer', 'bob@example.com', 'cus_bob', $t0);
my $ann = $r->create_subscription(owner => 'ann@example.com', product => 'geo',
    plan => 'geo-flat', now => $t0, start => $t0);
my $bob = $r->create_subscription(owner => 'bob@example.com', product => 'geo',
    plan => 'geo-metered', now => $t0, start => $t0);
my $carl = $r->create_subscription(owner => 'carl@example.com', product => 'geo',
    plan => 'geo-flat', now => start_of($prev[1]) + 86400000, start => start_of($prev[1]) + 86400000);
$r->set_state($carl->{id}, 'cancel', now => start_of($prev[1]) + 5 * 86400000);
make_calls($r, $bob, 25, start_of($prev[0]) + 9 * 86400000);     # 3 units in m-1
for (1 .. 4) {                                                   # the open month
    my $c = $r->check(key => $bob->{primary}, api => 'lookup', now => 0);
    die "call refused: $c->{result}\n" unless $c->{result} eq 'allowed';
}

my $far = $since_boundary > 15 * 60 * 1000;        # Redis is not near the boundary
SKIP: {
    skip 'Redis is within 15 minutes of a month boundary', 9 unless $far;

    # --- ahead: the agent thinks month $cur is over (30 s into $next)
    my $env = at_env("$next-01 00:00:30");
    my $run = run_agent(env => $env, args => ['bill', '--dry-run']);
    is($run->{rc}, 1, 'agent ahead: dry run ends (exit 1: carl has no customer)') or diag $run->{err};
    like($run->{err}, qr/^$next-01T00:00:3\dZ /m, 'agent ahead: its own clock is in the next month');
    is_deeply(billed($run->{err}), [reverse @prev],
        "agent ahead: bills the closed months by Redis's clock (@prev), not $cur");
    unlike($run->{out}, qr/apimon_period%5D=\Q$cur\E/, "agent ahead: no line of the open month $cur");
    $run = run_agent(env => $env, args => ['bill', '--period', $cur, '--dry-run']);
    is($run->{rc}, 2, "agent ahead: --period $cur refused");
    like($run->{err}, qr/period \Q$cur\E has not closed .*Redis's clock: \Q$cur\E-/,
        "... as not closed by Redis's clock");

    # --- behind: the agent thinks it is still the last second of m-1
    $env = at_env(strftime('%Y-%m-%d %H:%M:%S', gmtime(start_of($cur) / 1000 - 30)));
    $run = run_agent(env => $env, args => ['bill']);
    is($run->{rc}, 1, 'agent behind: exit 1 (carl unmapped)') or diag $run->{err};
    is_deeply(billed($run->{err}), [reverse @prev], "agent behind: m-1 ($prev[0]) billed too");
    my %lines = map { ("$_->{metadata}{apimon_period}|$_->{metadata}{apimon_subscription}|$_->{metadata}{apimon_line}"
        => $_->{amount}) } $stripe->items;
    is($lines{"$prev[0]|$bob->{id}|usage"}, 21, "agent behind: bob's usage of $prev[0] billed (3 units)");
}

# --- never skipping: the month carl left unfinished is billed by the next
# run, once his owner has a customer; the finished months are not rerun
$r->set_customer('developer', 'carl@example.com', 'cus_carl', $t0);
my $run = run_agent(env => agent_env($r, $stripe), args => ['bill']);
is($run->{rc}, 0, 'next default run: exit 0') or diag $run->{err};
is_deeply(billed($run->{err}), $far ? [$prev[1]] : [reverse @prev],
    "next default run: only the unfinished month $prev[1]");
is(scalar(grep { $_->{metadata}{apimon_subscription} eq $carl->{id} } $stripe->items), 1,
    "carl's line of $prev[1] posted");
$run = run_agent(env => agent_env($r, $stripe), args => ['bill']);
is($run->{rc}, 0, 'then: exit 0');
is_deeply(billed($run->{err}), [], 'then: nothing left to bill');
like($run->{err}, qr/nothing to bill/, '... and says so');
ok($r->cmd('HGET', 'apimon:bill:' . join('', split /-/, $prev[0]), 'month|done'),
    'a finished month is recorded in its ledger (month|done)');

# a month recorded as done and then reopened (record removed) is billed
# again, alone, posting nothing new
my $posts = scalar $stripe->items;
$r->cmd('HDEL', 'apimon:bill:' . join('', split /-/, $prev[1]), 'month|done');
$run = run_agent(env => agent_env($r, $stripe), args => ['bill', '--since', $prev[1]]);
is_deeply(billed($run->{err}), [$prev[1]], '--since: a reopened month is billed again');
is(scalar $stripe->items, $posts, '... posting nothing twice');

# --- the margin: by Redis's clock, never the agent's
SKIP: {
    skip 'Redis is within 15 minutes of a month boundary', 2 unless $far;
    # the agent's clock 30 s after a boundary, Redis's far from one: runs
    $r->cmd('HDEL', 'apimon:bill:' . join('', split /-/, $prev[0]), 'month|done');
    my $run = run_agent(env => at_env("$next-01 00:00:30"), args => ['bill']);
    is($run->{rc}, 0, "the agent's clock near a boundary is no reason to refuse") or diag $run->{err};
    is_deeply(billed($run->{err}), [$prev[0]], '... and it billed');
}
SKIP: {
    my $d = int($since_boundary / 1000);
    skip 'Redis is more than 13 days past the 1st', 3 if $d > 13 * 86400;
    # a margin that covers Redis's time since the 1st, but not the agent's
    # (mid-month): refused by Redis's clock
    my $margin = $d + 600;
    my $mid = shift_month($cur, 2) . '-16 12:00:00';
    my $posts = grep { $_->{method} eq 'POST' } $stripe->requests;
    $r->cmd('HDEL', 'apimon:bill:' . join('', split /-/, $prev[0]), 'month|done');
    my $run = run_agent(env => at_env($mid), args => ['bill', '--period', $prev[0],
        '--boundary-margin', $margin]);
    is($run->{rc}, 5, "within the margin of $prev[0]'s end by Redis's clock: exit 5") or diag $run->{err};
    like($run->{err}, qr/Redis's clock says \Q$cur\E-\d\dT.*within $margin s of the end of \Q$prev[0]\E \(\Q$cur\E-01T00:00:00Z\).*run again after/,
        '... saying when, by which clock, and when to run again');
    is(scalar(grep { $_->{method} eq 'POST' } $stripe->requests), $posts, '... nothing posted');
}

done_testing;
