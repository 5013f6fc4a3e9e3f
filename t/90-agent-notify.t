#!/usr/bin/perl
# billing-agent notify: events XADDed to apimon:events in the format of
# schema/README.md ("Events") are POSTed, signed, to the catalog's webhooks
# (top level and the event's plan) by a consumer group; 500 then 200 is
# delivered once after a retry, a receiver that is down or answers 4xx parks
# the event in apimon:events:dead, a timeout is retried, two processes on one
# group deliver each event once, a dead consumer's entries are claimed, and
# --once exits when drained.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Webhook;
use Apimon::Agent qw(run_agent);
use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP;
use Time::HiRes qw(sleep);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $w1 = Apimon::Webhook->start;                 # the catalog's top-level webhook
my $w2 = Apimon::Webhook->start;                 # plan gold's
my $down = Apimon::Redis::free_port();           # nobody listens there
my $env = { APIMON_REDIS => '127.0.0.1:' . $r->port };
my $J = JSON::PP->new->canonical;

my $free = { model => 'free' };
$r->apply_catalog($J->encode({
    webhooks => [ { url => $w1->url, secretFile => $w1->secret_file } ],
    products => [ { name => 'weather', apis => [ 'forecast' ] } ],
    plans => [
        { name => 'basic', product => 'weather', pricing => $free, quota => { limit => 100, period => 'month', notify => [ 80 ] } },
        { name => 'gold', product => 'weather', pricing => $free,
          webhooks => [ { url => $w2->url('/gold'), secretFile => $w2->secret_file } ] },
        { name => 'down', product => 'weather', pricing => $free,
          webhooks => [ { url => "http://127.0.0.1:$down/hooks/T0KEN-in-the-path?k=T0KEN", secretFile => $w1->secret_file } ] },
        { name => 'nosecret', product => 'weather', pricing => $free,
          webhooks => [ { url => $w2->url('/n'), secretFile => '/nonexistent/apimon/hook.secret' } ] },
    ],
}));

my $seq = 0;
# an event in the documented format (the check script produces them)
sub event {
    my (%o) = @_;
    my %e = (id => 'ev-' . ++$seq, type => 'threshold', subscription => '6f1c2a9e-0b4d-4c1e-9a7f-3d2b1c0e9f8a',
             owner => 'developer:ann@example.com', plan => 'basic', product => 'weather', rule => 'plan-quota',
             threshold => 80, used => 80, limit => 100, periodStart => 1798761600000, periodEnd => 1801440000000,
             time => 1799000000000, %o);
    $r->cmd('XADD', 'apimon:events', 'MAXLEN', '~', 100000, '*', map { ($_ => $e{$_}) } sort keys %e);
    return \%e;
}
sub notify { run_agent(env => $env, args => [ @_, 'notify' ]) }
sub pending { $r->cmd('XPENDING', 'apimon:events', 'apimon-notify')->[0] }
sub dead { [ map { +{ @{ $_->[1] } } } @{ $r->cmd('XRANGE', 'apimon:events:dead', '-', '+') } ] }

# --- nothing to do: --once exits at once, the group exists
my $run = notify('--once');
is($run->{rc}, 0, 'empty stream: --once exits 0') or diag $run->{err};
is($r->cmd('XINFO', 'GROUPS', 'apimon:events')->[0][1], 'apimon-notify', 'the consumer group apimon-notify exists');

# --- one event: POSTed once, signed, acknowledged
my $e = event();
$run = notify('--once');
is($run->{rc}, 0, 'one event: exit 0') or diag $run->{err};
my @req = $w1->requests;
is(scalar @req, 1, 'the top-level webhook got it once');
is($req[0]{path}, '/hooks', 'at its URL');
is($req[0]{content_type}, 'application/json', 'as JSON');
is($req[0]{event_id}, $e->{id}, 'Apimon-Event-Id is the event id');
ok($req[0]{verified}, 'the receiver verifies the signature');
my ($t, $v1) = ($req[0]{signature} // '') =~ /^t=(\d+),v1=([0-9a-f]{64})$/;
ok(defined $t, 'Apimon-Signature: t=<seconds>,v1=<hex>');
is($v1, hmac_sha256_hex("$t.$req[0]{body}", $w1->secret), 'v1 = HMAC-SHA256(secret, "<t>.<body>")');
ok(abs($t - time) < 300, 't is the time of sending');
is_deeply(decode_json($req[0]{body}), $e, 'the body is the event, numbers as numbers');
is(pending(), 0, 'acknowledged');
unlike($run->{err} . $run->{out}, qr/\Q${\ $w1->secret }\E/, 'the secret is in no output');

# --- the plan's webhooks too
$e = event(plan => 'gold');
$run = notify('--once');
is(scalar(grep { $_->{event_id} eq $e->{id} } $w1->requests), 1, 'gold: the top-level webhook');
my @g = grep { $_->{event_id} eq $e->{id} } $w2->requests;
is(scalar @g, 1, 'gold: and the plan\'s webhook');
ok($g[0]{verified} && $g[0]{path} eq '/gold', 'signed with the plan webhook\'s own secret');

# --- 500 then 200: retried, delivered once, acknowledged
$w1->reset;
$w1->fault(status => 500, count => 1);
$e = event();
$run = notify('--once');
is($run->{rc}, 0, '500 then 200: exit 0');
@req = $w1->requests;
is_deeply([ map { $_->{answered} } @req ], [ 500, 200 ], 'one 500, then retried and answered 200');
is($req[0]{body}, $req[1]{body}, 'the retry sends the same body');
is($req[1]{event_id}, $e->{id}, 'with the same event id');
ok($req[1]{verified}, 'signed again');
is(pending(), 0, 'acknowledged after the 2xx');
is(scalar @{ dead() }, 0, 'nothing parked');
like($run->{err}, qr/HTTP 500 \(attempt 1\)/, 'the failed attempt is logged');

# --- a timeout is retried
$w1->reset;
$w1->fault(type => 'slow', seconds => 3, count => 1);
$e = event();
$run = notify('--once', '--timeout', 1, '--max-attempts', 3);
@req = $w1->requests;
# (the receiver serves one connection at a time: a retry may queue behind
# the slow answer and time out too)
ok(@req >= 2 && ($req[0]{fault} // '') eq 'slow', 'timed out, then retried');
is(scalar @{ dead() }, 0, 'delivered, not parked');
is(pending(), 0, 'acknowledged');
like($run->{err}, qr/timed out|Timeout/i, 'the timeout is logged');

# --- receiver down: dead letter after --max-attempts, the good webhook served once
$w1->reset;
$e = event(plan => 'down');
$run = notify('--once', '--max-attempts', 3);
is($run->{rc}, 0, 'receiver down: exit 0 (the event is parked, not lost)');
is(scalar(grep { $_->{event_id} eq $e->{id} } $w1->requests), 1, 'the webhook that answered is not called again');
my $d = dead();
is(scalar @$d, 1, 'one event in apimon:events:dead');
is($d->[0]{id}, $e->{id}, 'the event, with its fields');
is($d->[0]{attempts}, 3, 'after 3 attempts');
like($d->[0]{reason}, qr/onnect/i, 'reason: the connection was refused');
like($d->[0]{streamId}, qr/^\d+-\d+$/, 'and its id in apimon:events');
like($run->{err}, qr{to http://127\.0\.0\.1:$down: }, 'the log names the webhook by its origin');
unlike($run->{err}, qr/T0KEN/, 'not by its path or query (they may hold a token)');
is(pending(), 0, 'acknowledged in apimon:events');

# --- no webhook at all for the event: parked, not dropped silently
my $bare = Apimon::Redis->start;
$bare->apply_catalog($J->encode({ products => [ { name => 'weather', apis => [ 'forecast' ] } ],
                                  plans => [ { name => 'basic', product => 'weather', pricing => $free } ] }));
$bare->cmd('XADD', 'apimon:events', '*', id => 'lonely', type => 'refused', plan => 'basic');
is(run_agent(env => { APIMON_REDIS => '127.0.0.1:' . $bare->port }, args => [ '--once', 'notify' ])->{rc}, 0,
   'a catalog without webhooks: exit 0');
is_deeply([ map { { @{ $_->[1] } }->{reason} } @{ $bare->cmd('XRANGE', 'apimon:events:dead', '-', '+') } ],
          [ 'no webhook in the catalog' ], 'the event is parked: no webhook in the catalog');
$bare->stop;

# --- a 4xx is final: parked after one attempt
$w1->reset;
$w1->fault(status => 400, count => 1);
$e = event();
notify('--once', '--max-attempts', 5);
is(scalar($w1->requests), 1, '400: not retried');
is(dead()->[-1]{reason}, 'HTTP 400', 'parked with the answer');
is(dead()->[-1]{attempts}, 1, 'after one attempt');

# --- a missing secretFile: never sent unsigned
$w2->reset;
$e = event(plan => 'nosecret');
$run = notify('--once', '--max-attempts', 2);
is(scalar($w2->requests), 0, 'nothing sent without its secret');
like(dead()->[-1]{reason}, qr{secretFile /nonexistent/apimon/hook.secret}, 'parked, naming the file');

# --- two notify processes on one group: each event delivered once
$w1->reset;
my @ids = map { event()->{id} } 1 .. 30;
my @p = map { Apimon::Agent::spawn_agent(env => $env, args => [ '--once', '--consumer', "c$_", 'notify' ]) } 1, 2;
my @rc = map { Apimon::Agent::wait_agent($_, 60)->{rc} } @p;
is_deeply(\@rc, [ 0, 0 ], 'two processes, both exit 0');
my %n;
$n{ $_->{event_id} }++ for $w1->requests;
is(scalar(grep { ($n{$_} // 0) == 1 } @ids), 30, '30 events, each delivered exactly once');
is(pending(), 0, 'all acknowledged');
my %by = map { $_->[1] => $_->[5] } @{ $r->cmd('XINFO', 'CONSUMERS', 'apimon:events', 'apimon-notify') };
ok(exists $by{c1} && exists $by{c2}, 'both consumers joined the group');

# --- a dead consumer's entry is claimed (XAUTOCLAIM)
$w1->reset;
$e = event();
$r->cmd('XREADGROUP', 'GROUP', 'apimon-notify', 'crashed', 'COUNT', 1, 'STREAMS', 'apimon:events', '>');
is(pending(), 1, 'a consumer read an event and died');
notify('--once', '--claim-idle', 60);
is(scalar($w1->requests), 0, 'not idle long enough: left alone');
sleep 0.2;
$run = notify('--once', '--claim-idle', 0);
is(scalar(grep { $_->{event_id} eq $e->{id} } $w1->requests), 1, 'claimed and delivered');
is(pending(), 0, 'acknowledged');

# --- long-running: delivers as events come, stops on SIGTERM
$w1->reset;
my $p = Apimon::Agent::spawn_agent(env => $env, args => [ 'notify' ]);
sleep 0.3;
$e = event();
my $got = 0;
for (1 .. 200) { $got = grep({ $_->{event_id} eq $e->{id} } $w1->requests) and last; sleep 0.05 }
ok($got, 'long-running: a new event is delivered');
kill 'TERM', $p->{pid};
is(Apimon::Agent::wait_agent($p, 20)->{rc}, 0, 'SIGTERM: exit 0');

# --- docs/webhooks.md's worked example verifies
open my $doc, '<', "$FindBin::Bin/../docs/webhooks.md" or die "docs/webhooks.md: $!";
my $md = do { local $/; <$doc> };
my ($dsecret) = $md =~ /With the secret `([0-9a-f]+)`/;
my ($dt, $dv1) = $md =~ /^Apimon-Signature: t=(\d+),v1=([0-9a-f]{64})$/m;
my ($dbody) = $md =~ /^(\{"id":"ev-1".*\})$/m;
ok(defined $dsecret && defined $dbody, 'docs/webhooks.md: the example is there');
is(hmac_sha256_hex("$dt.$dbody", $dsecret // ''), $dv1, 'docs/webhooks.md: its signature verifies');
my ($shell) = $md =~ /^(\w{64}) \*stdin$/m;
is($shell, $dv1, 'docs/webhooks.md: the openssl line shows the same');

# --- usage
is(notify('--max-attempts', 0)->{rc}, 2, '--max-attempts 0: usage error');
is(notify('--consumer', 'a b')->{rc}, 2, '--consumer with a space: usage error');
is(run_agent(env => $env, args => [ 'notify', 'x' ])->{rc}, 2, 'an extra argument: usage error');
is(run_agent(env => { APIMON_REDIS => "127.0.0.1:$down" }, args => [ '--once', 'notify' ])->{rc}, 2,
   'Redis unreachable: exit 2');

done_testing;
