#!/usr/bin/perl
# Operations: reconciliation that has to page through the customer's items,
# the --max-rps throttle, SIGTERM stopping at a line boundary (lock
# released, rerun resumes), and command-line / environment errors.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent spawn_agent wait_agent setup_models items_by_line agent_env);
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $env = agent_env($r, $stripe);
my @bill = ('bill', '--period', '2026-01', '--max-rps', '1000');

sub wait_for { my ($f) = @_; my $t0 = time; while (time - $t0 < 10) { return 1 if $f->(); sleep 0.05 } 0 }
sub exactly_once {
    my ($what) = @_;
    my $n = $stripe->key_counts;
    is_deeply([ grep { $_ ne '' && $n->{$_} > 1 } keys %$n ], [], "$what: no key twice");
    my $got = items_by_line($stripe);
    is_deeply({ map { $_ => [ @{ $got->{$_} }[0, 1] ] } keys %$got }, $m->{expect}, "$what: every line once");
}

# killed inside the first POST; then 150 newer items of that customer appear
$stripe->fault('slow', seconds => 1, after => 0);
my $p = spawn_agent(env => $env, args => [@bill, '--lock-ttl', '1']);
ok(wait_for(sub { grep { ($_->{fault} // '') eq 'slow' } $stripe->requests }), 'paging: agent inside the slow POST');
kill 'KILL', $p->{pid};
wait_agent($p);
my %led = @{ $r->cmd('HGETALL', 'apimon:bill:202601') };
my ($computed) = grep { decode_json($led{$_})->{state} eq 'computed' } keys %led;
my ($cus) = decode_json($led{$computed})->{body} =~ /customer=(cus_\w+)/;
my ($cur) = decode_json($led{$computed})->{body} =~ /currency=([a-z]{3})/;
my $http = HTTP::Tiny->new;
for my $i (1 .. 150) {
    $http->post_form($stripe->url . '/v1/invoiceitems',
        { customer => $cus, amount => 1, currency => $cur, description => "other $i" },
        { headers => { Authorization => 'Bearer ' . $stripe->key } });
}
sleep 1.2;
my $run = run_agent(env => $env, args => \@bill);
is($run->{rc}, 0, 'paging: rerun exit 0') or diag $run->{err};
ok((grep { $_->{method} eq 'GET' && ($_->{query} // '') =~ /starting_after=ii_/ } $stripe->requests),
    'paging: the listing went past the first page');
like($run->{err}, qr/reconciled/, 'paging: found the item');
exactly_once('paging');

# throttle: 10 lines at 5 requests/s take about 2 s
$r->flushall;
$stripe->reset;
$m = setup_models($r);
my $t0 = time;
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--max-rps', '5']);
my $dt = time - $t0;
is($run->{rc}, 0, 'throttle: exit 0');
my $nreq = () = $stripe->requests;
ok($dt >= ($nreq - 1) / 5 - 0.1, sprintf('throttle: %d requests took %.2f s at --max-rps 5', $nreq, $dt));
my @ts = map { $_->{time} } $stripe->requests;
my $max = 0;
for my $i (0 .. $#ts) {
    my $n = grep { $_ >= $ts[$i] && $_ < $ts[$i] + 1 } @ts;
    $max = $n if $n > $max;
}
ok($max <= 6, "throttle: at most $max requests in any second");

# SIGTERM: stops after the line in hand, releases the lock, exit 1
$r->flushall;
$stripe->reset;
$m = setup_models($r);
$p = spawn_agent(env => $env, args => ['bill', '--period', '2026-01', '--max-rps', '4']);
ok(wait_for(sub { (grep { $_->{method} eq 'POST' } $stripe->requests) >= 2 }), 'sigterm: run under way');
kill 'TERM', $p->{pid};
$run = wait_agent($p, 20);
is($run->{rc}, 1, 'sigterm: exit 1 (rerun to resume)');
like($run->{err}, qr/stopped by signal 15/, 'sigterm: says so');
is($r->cmd('EXISTS', 'apimon:bill:lock'), 0, 'sigterm: lock released');
%led = @{ $r->cmd('HGETALL', 'apimon:bill:202601') };
is((grep { decode_json($led{$_})->{state} eq 'computed' } keys %led), 0, 'sigterm: no line left in flight');
ok(scalar($stripe->items) < scalar keys %{ $m->{expect} }, 'sigterm: stopped early');
$run = run_agent(env => $env, args => \@bill);
is($run->{rc}, 0, 'sigterm: rerun exit 0');
exactly_once('sigterm');

# Redis goes away in the middle of a run: exit 1, nothing lost, the rerun
# (Redis back with its data) posts every line exactly once
{
    my $ra = Apimon::Redis->start(aof => 1);
    $stripe->reset;
    my $ma = setup_models($ra);
    my $enva = agent_env($ra, $stripe);
    $stripe->fault('slow', seconds => 1, after => 3);
    my $pa = spawn_agent(env => $enva, args => [@bill, '--lock-ttl', '3']);
    ok(wait_for(sub { grep { ($_->{fault} // '') eq 'slow' } $stripe->requests }), 'redis lost: run inside a POST');
    $ra->stop;
    my $ru = wait_agent($pa, 40);
    is($ru->{rc}, 1, 'redis lost: exit 1');
    like($ru->{err}, qr/ledger .*Redis|Redis: /, 'redis lost: says so');
    $ra->restart;
    # the run could not release its lock without Redis: it expires by itself
    my $again = run_agent(env => $enva, args => [@bill]);
    is($again->{rc}, 3, 'redis back: the dead run\'s lock holds until its TTL');
    sleep 3;
    $again = run_agent(env => $enva, args => [@bill]);
    is($again->{rc}, 0, 'redis back: rerun exit 0') or diag $again->{err};
    my $n = $stripe->key_counts;
    is_deeply([ grep { $_ ne '' && $n->{$_} > 1 } keys %$n ], [], 'redis lost: no key twice');
    my $got = items_by_line($stripe);
    is_deeply({ map { $_ => [ @{ $got->{$_} }[0, 1] ] } keys %$got }, $ma->{expect},
        'redis lost: every line once');
    $ra->stop;
}

# command line and environment
$run = run_agent(env => $env, args => ['--help']);
is($run->{rc}, 0, '--help: exit 0');
like($run->{out}, qr/usage: billing-agent .*exit codes/s, '--help: usage with exit codes');
$run = run_agent(env => $env, args => []);
is($run->{rc}, 2, 'no command: exit 2');
$run = run_agent(env => $env, args => ['frobnicate']);
is($run->{rc}, 2, 'unknown command: exit 2');
$run = run_agent(env => $env, args => ['bill', '--max-rps', 'fast']);
is($run->{rc}, 2, 'bad --max-rps: exit 2');
$run = run_agent(env => $env, args => ['bill', '--no-such-option']);
is($run->{rc}, 2, 'unknown option: exit 2');
$run = run_agent(env => { %$env, APIMON_REDIS => '127.0.0.1:1' }, args => [@bill]);
is($run->{rc}, 2, 'Redis unreachable: exit 2');
like($run->{err}, qr/cannot connect to Redis at 127.0.0.1:1/, 'Redis unreachable: says where');
$run = run_agent(env => $env, args => ['--redis', '127.0.0.1:' . $r->port, 'catalog', 'show']);
is($run->{rc}, 0, '--redis option');
$run = run_agent(env => { %$env, STRIPE_API_BASE => 'http://127.0.0.1:1' },
    args => ['bill', '--period', '2026-02', '--max-retries', '1']);
is($run->{rc}, 1, 'API unreachable: exit 1');
like($run->{err}, qr/does not answer.*nothing was posted/, 'API unreachable: says so');
is($r->cmd('EXISTS', 'apimon:bill:202602'), 0, 'API unreachable: no ledger entry');

done_testing;
