#!/usr/bin/perl
# subscription_create and catalog_apply for purchases by product name (the
# product's default plan), fixed terms (endTime) and the range of times.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Apimon::Redis;

my $r = Apimon::Redis->start;
*ms = \&Apimon::Redis::ms_utc;
my $T = ms('2027-02-01T09:00');
my $J = JSON::PP->new->canonical;
sub fails { my $code = shift; return eval { $code->(); 1 } ? 'no error' : $@ }

sub flat { { name => $_[0], product => $_[1], pricing => { model => 'flat', currency => 'usd', amount => 100 } } }
my $cat = {
    products => [ { name => 'p2', apis => [ 'a' ], defaultPlan => 'p2-b' }, { name => 'p1', apis => [ 'a' ] },
                  { name => 'p3', apis => [ 'a' ] }, { name => 'p0', apis => [ 'a' ] } ],
    plans => [ flat('p2-a', 'p2'), flat('p2-b', 'p2'), flat('p1-a', 'p1'), flat('p3-a', 'p3'), flat('p3-b', 'p3') ],
};
sub apply { $r->run_script('catalog_apply', [], [ $J->encode($_[0]), $T ]) }

# --- catalog_apply: defaultPlan
for my $c ([ 'nope', qr/bad_request: products\[0\]\.defaultPlan: no such plan in this catalog: nope/, 'unknown plan' ],
           [ 'p1-a', qr/bad_request: products\[0\]\.defaultPlan: plan p1-a is a plan of product p1/, "another's plan" ],
           [ 5, qr/bad_request: products\[0\]\.defaultPlan: must be a string/, 'not a string' ],
           [ 'a b', qr/bad_request: products\[0\]\.defaultPlan: must match/, 'not a name' ]) {
    my $bad = $J->decode($J->encode($cat));
    $bad->{products}[0]{defaultPlan} = $c->[0];
    like(fails(sub { apply($bad) }), $c->[1], "catalog_apply refuses $c->[2]");
}
is($r->cmd('EXISTS', 'apimon:catalog'), 0, 'nothing applied');
is(apply($cat), 1, 'applied');
is_deeply([ map { [ @{ $r->cmd('HMGET', "apimon:product:$_", 'defaultPlan', 'nplans') } ] } qw(p2 p1 p3 p0) ],
          [ [ 'p2-b', 2 ], [ 'p1-a', 1 ], [ '', 2 ], [ '', 0 ] ],
          'product hashes: the declared default, the only plan, none; the number of plans');

# --- subscription_create with no plan
$r->put_developer('ann@example.com', {}, now => $T);
sub buy {
    my (%o) = @_;
    my $id = Apimon::Redis::new_uuid();
    my $reply = $r->run_script('subscription_create', [ Apimon::Redis::sub_key($id) ],
        [ Apimon::Redis::mgmt_args(now => $o{now} // $T, owner_kind => 'developer', owner => 'ann@example.com'), $id, $o{product}, $o{plan} // '',
          Apimon::Redis::key_digest(Apimon::Redis::new_key($id)), '', $o{start} // 0, $o{end} // 0 ]);
    return $J->decode($reply);
}
is(buy(product => 'p2')->{plan}, 'p2-b', 'no plan: the declared default');
is(buy(product => 'p1')->{plan}, 'p1-a', 'no plan: the only plan');
is(buy(product => 'p2', plan => 'p2-a')->{plan}, 'p2-a', 'a plan given: that plan');
like(fails(sub { buy(product => 'p3') }), qr/bad_request: plan: is required: product p3 has 2 plans and no defaultPlan$/,
     'several plans, no default');
like(fails(sub { buy(product => 'p0') }), qr/bad_request: plan: is required: product p0 has 0 plans and no defaultPlan$/,
     'no plan at all');
like(fails(sub { buy(product => 'px') }), qr/not_found: no such product px/, 'unknown product');

# --- a catalog applied before defaultPlan existed (no defaultPlan, nplans):
# the product's only plan is still its default
$r->cmd('HDEL', "apimon:product:$_", 'defaultPlan', 'nplans') for qw(p1 p3 p0);
is(buy(product => 'p1')->{plan}, 'p1-a', 'an older catalog: the only plan');
like(fails(sub { buy(product => 'p3') }), qr/bad_request: plan: is required: product p3 has 2 plans and no defaultPlan$/,
     'an older catalog, several plans: the count');
like(fails(sub { buy(product => 'p0') }), qr/bad_request: plan: is required: product p0 has 0 plans and no defaultPlan$/,
     'an older catalog, no plan');
apply($cat);

# --- times: range, endTime after startTime
my $RANGE = 'must be milliseconds since the epoch from 946684800000 \(2000-01-01\) to 253402300799999';
my $subs = $r->cmd('SCARD', 'apimon:subs');
for my $v ('1234567890123456789', '9223372036854775807', '9223372036854775808', '1e400', '946684799999',
           '253402300800000', '1.5', '-1', 'x', '0x1C3') {
    like(fails(sub { buy(product => 'p1', start => $v) }), qr/bad_request: startTime: $RANGE/, "startTime $v");
    like(fails(sub { buy(product => 'p1', end => $v) }), qr/bad_request: endTime: $RANGE/, "endTime $v");
}
like(fails(sub { buy(product => 'p1', start => $T + 10, end => $T + 10) }), qr/bad_request: endTime: must be after startTime/,
     'endTime = startTime');
like(fails(sub { buy(product => 'p1', end => $T) }), qr/bad_request: endTime: must be after startTime \($T\)/,
     'endTime = now, no startTime');
is($r->cmd('SCARD', 'apimon:subs'), $subs, 'the refusals created nothing');

my $s = buy(product => 'p1', start => 946684800000, end => 253402300799999);
is_deeply([ @$s{qw(startTime endTime)} ], [ '946684800000', '253402300799999' ], 'the bounds are in range');
$s = buy(product => 'p1', end => $T + 1);
is($s->{endTime}, $T + 1, 'endTime just after now');
is((split /\|/, $r->cmd('HGET', Apimon::Redis::sub_key($s->{id}), 'pol'))[2], $T + 1, 'endTime in the check policy');
is($r->check(sub => $s->{id}, digest => $r->cmd('HGET', Apimon::Redis::sub_key($s->{id}), 'kp'),
             api => 'a', now => $T)->{result}, 'allowed', 'before endTime: allowed');
is($r->check(sub => $s->{id}, digest => $r->cmd('HGET', Apimon::Redis::sub_key($s->{id}), 'kp'),
             api => 'a', now => $T + 1)->{result}, 'inactive', 'at endTime: inactive');
is(buy(product => 'p1')->{endTime}, '0', 'no endTime: open-ended (0)');

done_testing;
