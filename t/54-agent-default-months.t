#!/usr/bin/perl
# Which months a default run (no --period) bills: never a month that had
# closed before the subscription was created (a purchase may carry a past
# startTime), a subscription whose times cannot be read is reported (exit 1)
# even when every month is done; --since goes only with default runs; a dry
# run shows what would be billed even on a Redis that may lose usage.
use strict;
use warnings;
use Test::More;
use POSIX qw(floor);
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent agent_env ms);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $stripe = Apimon::Stripe->start;

sub month_of { my @t = gmtime(floor($_[0] / 1000)); sprintf('%04d-%02d', $t[5] + 1900, $t[4] + 1) }
sub shift_month {
    my ($m, $n) = @_;
    my ($y, $mo) = split /-/, $m;
    my $k = $y * 12 + $mo - 1 + $n;
    return sprintf('%04d-%02d', int($k / 12), $k % 12 + 1);
}
sub billed { my ($err) = @_; return [ $err =~ /billing (\d{4}-\d\d)/g ] }

sub redis_with_owner {
    my (%o) = @_;
    my $r = Apimon::Redis->start(%o);
    my ($sec) = @{ $r->cmd('TIME') };
    my $now = $sec * 1000;
    my $m2 = shift_month(month_of($now), -2);
    $r->apply_catalog(Apimon::Agent::models_catalog(), ms("$m2-01"));
    $r->put_developer('ann@example.com', { firstName => 'ann', lastName => 'X',
        userName => 'ann' }, now => ms("$m2-01"));
    $r->set_customer('developer', 'ann@example.com', 'cus_ann', ms("$m2-01"));
    return ($r, $now);
}

my ($r, $now) = redis_with_owner();
my $cur = month_of($now);
my ($m1, $m2, $m3) = map { shift_month($cur, -$_) } 1 .. 3;
my $margin = ['--boundary-margin', '0'];

# --- bought this month with a startTime in 2001: no month of 2001..last
# month is billed by default (before: 300 and more monthly fees at once)
$r->create_subscription(owner => 'ann@example.com', product => 'geo',
    plan => 'geo-flat', now => $now, start => ms('2001-01-01'));
my $run = run_agent(env => agent_env($r, $stripe), args => ['bill', '--dry-run', @$margin]);
is($run->{rc}, 0, 'a past startTime: exit 0') or diag $run->{err};
is_deeply(billed($run->{err}), [], 'a past startTime: no month before the one it was created in');
unlike($run->{out}, qr/cus_ann/, 'a past startTime: nothing would be posted');

# --- created in m-2, backdated to the start of m-3: billed from m-2 (the
# month it was created in, from its startTime within it) on
$r->create_subscription(owner => 'ann@example.com', product => 'geo',
    plan => 'geo-flat', now => ms("$m2-10"), start => ms("$m3-01"));
$run = run_agent(env => agent_env($r, $stripe), args => ['bill', '--dry-run', @$margin]);
is($run->{rc}, 0, 'backdated across months: exit 0') or diag $run->{err};
is_deeply(billed($run->{err}), [$m2, $m1], "backdated across months: $m2 and $m1, not $m3");
$run = run_agent(env => agent_env($r, $stripe), args => ['bill', '--period', $m3, '--dry-run', @$margin]);
like($run->{out}, qr/cus_ann/, "--period $m3 still bills it when asked for");

# --- every month done, then a subscription whose startTime cannot be read:
# the next default run reports it and exits 1 (before: exit 0, nothing said)
$run = run_agent(env => agent_env($r, $stripe), args => ['bill', @$margin]);
is($run->{rc}, 0, 'billed for real: exit 0') or diag $run->{err};
$run = run_agent(env => agent_env($r, $stripe), args => ['bill', '--dry-run', @$margin]);
is_deeply(billed($run->{err}), [], 'every closed month done: nothing to bill');
{
    my ($r2, $now2) = redis_with_owner();
    my $s = $r2->create_subscription(owner => 'ann@example.com', product => 'geo',
        plan => 'geo-flat', now => ms("$m2-10"), start => ms("$m2-10"));
    $r2->cmd('HSET', $s->{key}, 'startTime', '1767225600000000000');
    $run = run_agent(env => agent_env($r2, $stripe), args => ['bill', '--dry-run', @$margin]);
    is($run->{rc}, 1, 'only an unreadable subscription: exit 1') or diag $run->{err};
    like($run->{err}, qr/startTime "1767225600000000000" is not a time/,
        'only an unreadable subscription: reported with its reason');
}

# --- --since with --period: refused, not ignored
$run = run_agent(env => agent_env($r, $stripe), args => ['bill', '--period', $m1, '--since', $m2]);
is($run->{rc}, 2, '--since with --period: a usage error');
like($run->{err}, qr/--since \Q$m2\E: only for runs without --period/, '--since with --period: named');

# --- a dry run on a Redis that may lose usage: warned, not refused
{
    my ($r3) = redis_with_owner(aof => 0);
    $r3->create_subscription(owner => 'ann@example.com', product => 'geo',
        plan => 'geo-flat', now => ms("$m2-10"), start => ms("$m2-10"));
    $run = run_agent(env => agent_env($r3, $stripe), args => ['bill', '--dry-run', @$margin]);
    is($run->{rc}, 0, 'unsafe Redis, dry run: exit 0') or diag $run->{err};
    like($run->{err}, qr/may lose usage on a crash: .*a dry run goes on/, 'unsafe Redis, dry run: warned');
    $run = run_agent(env => agent_env($r3, $stripe), args => ['bill', @$margin]);
    is($run->{rc}, 4, 'unsafe Redis, a real run: still refused (exit 4)');
}

done_testing;
