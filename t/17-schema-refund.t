#!/usr/bin/perl
# check with a batch id records what it counted; check_refund undoes it for
# chosen requests (or all) exactly once: usage, quota (current or archived
# period), rate windows; a record of another batch or none changes nothing.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Apimon::Redis;

my $r = Apimon::Redis->start;
*ms = \&Apimon::Redis::ms_utc;
$r->apply_catalog(JSON::PP->new->encode({
    products => [ { name => 'p', apis => [ 'a', 'b' ] } ],
    plans => [
        { name => 'rq', product => 'p', pricing => { model => 'free' },
          rateLimit => { limit => 10, per => 'minute' }, quota => { limit => 100, period => 'month' } },
        { name => 'r1', product => 'p', pricing => { model => 'free' },
          rateLimit => { limit => 1, per => 'hour' } },
    ] }));
$r->put_developer('dev@example.com', {});
sub buy { $r->create_subscription(owner => 'dev@example.com', product => 'p', plan => $_[0], now => ms('2027-03-01')) }
sub usage { my ($s) = @_; return { @{ $r->cmd('HGETALL', "$s->{key}:usage:202703") } } }
sub state { my ($s, $f) = @_; $r->cmd('HGET', $s->{key}, $f) }
sub refund { $r->run_script('check_refund', [ "apimon:batch:$_[0]" =~ s/:\d+$//r ], [ $_[0], $_[1] ]) }

my $T0 = ms('2027-03-10T12:00:00');
my $s = buy('rq');
my $t = buy('r1');
my $ghost = Apimon::Redis::new_key(Apimon::Redis::new_uuid());

# a batch of five: allowed (plan + location hour quota), allowed, invalid,
# allowed on r1, rate_limited on r1
my @b = (
    { key => $s->{primary}, api => 'a', loc_quota => [ 5, 'hour' ], scope => 'a' },
    { key => $s->{primary}, api => 'a', loc_quota => [ 5, 'hour' ], scope => 'a' },
    { key => $ghost, api => 'a' },
    { key => $t->{primary}, api => 'b' },
    { key => $t->{primary}, api => 'b' },
);
my $res = $r->check_batch(\@b, $T0, 'w1:3:17');
is_deeply([ map { $_->{result} } @$res ], [ qw(allowed allowed invalid_key allowed rate_limited) ],
          'the batch is decided as usual');
my $rec = $r->cmd('GET', 'apimon:batch:w1:3');
like($rec, qr/\Aw1:3:17\n$T0\n/, 'the record: batch id, now, ...');
ok($r->cmd('PTTL', 'apimon:batch:w1:3') > 0, 'the record expires');
is_deeply(usage($s), { '20270310|a|ok' => 2 }, 'usage before: 2');
my $tat = state($s, 'c:rate:plan');
like(state($s, 'c:quota:plan'), qr/:2$/, 'plan quota: 2');

is(refund('w1:3:16', '*'), 0, 'another batch id: nothing refunded');
ok($r->cmd('EXISTS', 'apimon:batch:w1:3'), '... and the record kept');

is(refund('w1:3:17', '2,3,5'), 2, 'requests 2, 3 and 5: 2 refunded (3 counted nothing)');
ok(!$r->cmd('EXISTS', 'apimon:batch:w1:3'), 'the record is deleted');
is_deeply(usage($s), { '20270310|a|ok' => 1 }, 'usage: 1 accepted call left');
is_deeply(usage($t), { '20270310|b|ok' => 1 }, 'the refused call is gone from usage');
like(state($s, 'c:quota:plan'), qr/:1$/, 'plan quota: 1');
like(state($s, 'c:quota:loc.a'), qr/^hour:2027031012:\d+:\d+:1$/, 'location quota: 1');
is(state($s, 'c:rate:plan'), $tat - 6000000, 'plan rate: back one interval (6 s)');
is(refund('w1:3:17', '*'), 0, 'refunded twice: nothing more');
is_deeply(usage($s), { '20270310|a|ok' => 1 }, 'usage unchanged by the second refund');

# a refund after the quota period moved on: the archived period gives back
my $u = buy('rq');
my $one = [ { key => $u->{primary}, api => 'a', loc_quota => [ 5, 'hour' ], scope => 'a' } ];
$r->check_batch($one, $T0, 'w1:4:18');
$r->check_batch($one, $T0 + 3600000, 'w1:5:19');
is($r->cmd('GET', "$u->{key}:quota:loc.a:2027031012"), 1, 'the hour 12 count archived');
is(refund('w1:4:18', '*'), 1, 'refund of the hour 12 call');
is($r->cmd('GET', "$u->{key}:quota:loc.a:2027031012"), 0, 'the archived count gives it back');
like(state($u, 'c:quota:loc.a'), qr/^hour:2027031013:\d+:\d+:1$/, 'hour 13 untouched');
like(state($u, 'c:quota:plan'), qr/:1$/, 'plan quota (month): 1 of 2 left');

# without a batch id nothing is recorded; nothing counted, nothing recorded
$r->cmd('DEL', 'apimon:batch:w1:3');
$r->check_batch([ { key => $s->{primary}, api => 'a' } ], $T0);
is($r->cmd('KEYS', 'apimon:batch:*')->[0] // '', 'apimon:batch:w1:5', 'no batch id: no record');
$r->check_batch([ { key => $ghost, api => 'a' } ], $T0, 'w1:3:20');
ok(!$r->cmd('EXISTS', 'apimon:batch:w1:3'), 'nothing counted: no record');
my $bad = $r->try_script('check', [ $s->{key} ],
    [ $T0, 1, 'a', 0, 0, 0, '', 'loc', Apimon::Redis::key_digest($s->{primary}), 1, 'w 1' ]);
like(Apimon::Redis::is_error($bad) ? $bad->message : '', qr/bad_request: check: bad batch id/, 'a bad batch id: bad_request');

done_testing;
