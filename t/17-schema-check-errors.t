#!/usr/bin/perl
# check: a request whose keys hold something the script cannot count in
# (a usage key of another type, a usage field that is no count, an archived
# quota key of another type) fails alone, before anything is counted for
# it; the others of the batch are counted and recorded as usual, and the
# script never fails after a write (which would leave counts unrecorded,
# never refunded).
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
    products => [ { name => 'p', apis => [ 'a' ] } ],
    plans => [
        { name => 'rq', product => 'p', pricing => { model => 'free' },
          rateLimit => { limit => 10, per => 'minute' }, quota => { limit => 100, period => 'month' } },
    ] }));
$r->put_developer('dev@example.com', {});
sub buy { $r->create_subscription(owner => 'dev@example.com', product => 'p', plan => 'rq', now => ms('2027-03-01')) }
sub usage { my ($s) = @_; return { @{ $r->cmd('HGETALL', "$s->{key}:usage:202703") } } }
sub windows { my ($s) = @_; return [ map { $r->cmd('HGET', $s->{key}, $_) } 'c:rate:plan', 'c:quota:plan', 'c:quota:loc.a' ] }
sub quotas { my ($s) = @_; return [ @{ windows($s) }[1, 2] ] }
sub refund { $r->run_script('check_refund', [ "apimon:batch:$_[0]" =~ s/:\d+$//r ], [ $_[0], $_[1] ]) }

my $T0 = ms('2027-03-10T12:00:00');
my ($s, $t, $u) = (buy(), buy(), buy());
for my $x ($s, $t, $u) {     # one call each first: windows to compare with
    $r->check_batch([ { key => $x->{primary}, api => 'a' } ], $T0 - 60000);
}

# 1. the usage key of $t is a string
$r->cmd('DEL', "$t->{key}:usage:202703");
$r->cmd('SET', "$t->{key}:usage:202703", 'not a hash');
my %before = map { $_->{id} => windows($_) } $s, $t, $u;
my $res = eval { $r->check_batch([ map { { key => $_->{primary}, api => 'a' } } $s, $t, $u, $t ], $T0, 'w1:1:1') };
ok($res, 'a usage key of another type: the script does not fail') or diag $@;
$res ||= [];
is($res->[0]{result}, 'allowed', 'request 1: allowed');
like($res->[1]{error} // '', qr/WRONGTYPE/, 'request 2: fails alone (WRONGTYPE)');
is($res->[2]{result}, 'allowed', 'request 3: allowed');
like($res->[3]{error} // '', qr/WRONGTYPE/, 'request 4 (the same subscription): fails alone');
is_deeply(windows($t), $before{$t->{id}}, 'its windows are unchanged: nothing counted');
is($r->cmd('GET', "$t->{key}:usage:202703"), 'not a hash', 'its usage key is left as it was');
isnt($r->cmd('HGET', $s->{key}, 'c:rate:plan'), $before{$s->{id}}[0], 'the others are counted');
is_deeply(usage($s), { '20270310|a|ok' => 2 }, '... in usage too');
my $rec = $r->cmd('GET', 'apimon:batch:w1:1') // '';
like($rec, qr/\Aw1:1:1\n/, 'the batch is recorded');
like($rec, qr/\na\n1\n-\n1\na\n1\n-\n1\z/, 'the record: requests 1 and 3 counted, 2 and 4 nothing');
is(eval { refund('w1:1:1', '*') }, 2, 'a refund of the batch gives back the two counted');
is_deeply(quotas($s), [ @{ $before{$s->{id}} }[1, 2] ], 'request 1 refunded: its quota as before');
is_deeply(usage($u), { '20270310|a|ok' => 1 }, 'request 3 refunded: its usage as before');

# 2. a usage field that is no count
$r->cmd('DEL', "$t->{key}:usage:202703");
$r->cmd('HSET', "$t->{key}:usage:202703", '20270310|a|ok', 'x1');
%before = map { $_->{id} => windows($_) } $s, $t;
$res = eval { $r->check_batch([ map { { key => $_->{primary}, api => 'a' } } $s, $t ], $T0, 'w1:2:2') } || [];
is($res->[0]{result}, 'allowed', 'a usage field that is no count: request 1 allowed');
like($res->[1]{error} // '', qr/schema: usage field 20270310\|a\|ok of \S+ is not a count/, 'request 2 fails alone, named');
is_deeply(windows($t), $before{$t->{id}}, 'its windows are unchanged');
is($r->cmd('HGET', "$t->{key}:usage:202703", '20270310|a|ok'), 'x1', 'its usage field is left as it was');
like($r->cmd('GET', 'apimon:batch:w1:2') // '', qr/\na\n1\n-\n1\z/, 'recorded: request 1 counted, 2 nothing');
$r->cmd('DEL', "$t->{key}:usage:202703");

# 3. one quota field used with two units in a batch (two locations of one
# scope): the second unit's archived key is of another type. The first
# request's count is written when the unit changes; the second fails alone
my $v = buy();
my $hour = "$v->{key}:quota:loc.a:2027031012";
$r->cmd('HSET', $hour, 'x', 'y');
$res = eval { $r->check_batch([ { key => $v->{primary}, api => 'a', loc_quota => [ 5, 'day' ], scope => 'a' },
                                { key => $v->{primary}, api => 'a', loc_quota => [ 5, 'hour' ], scope => 'a' },
                                { key => $s->{primary}, api => 'a' } ], $T0, 'w1:3:3') };
ok($res, 'a quota archive of another type: the script does not fail') or diag $@;
$res ||= [];
is($res->[0]{result}, 'allowed', 'request 1 (a day quota): allowed');
like($res->[1]{error} // '', qr/WRONGTYPE/, 'request 2 (an hour quota of the same scope): fails alone');
is($res->[2]{result}, 'allowed', 'request 3: allowed');
like($r->cmd('HGET', $v->{key}, 'c:quota:loc.a'), qr/^day:20270310:\d+:\d+:1$/, 'the day quota holds request 1');
like($r->cmd('GET', 'apimon:batch:w1:3') // '', qr/\na\n1\n-\n2\na\n3\z/, 'recorded: requests 1 and 3 counted');
is(eval { refund('w1:3:3', '*') }, 2, 'the refund gives both back');
like($r->cmd('HGET', $v->{key}, 'c:quota:loc.a'), qr/^day:20270310:\d+:\d+:0$/, 'the day quota: 0');
is_deeply(usage($v), {}, 'no usage left');

done_testing;
