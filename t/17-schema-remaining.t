#!/usr/bin/perl
# The check script: a refused call is counted in no window, so every other
# window of its reply shows its remaining (and reset) without it.
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
        { name => 'r2q', product => 'p', pricing => { model => 'free' },
          rateLimit => { limit => 2, per => 'hour' }, quota => { limit => 50, period => 'month' } },
        { name => 'q2', product => 'p', pricing => { model => 'free' },
          quota => { limit => 2, period => 'day' } },
    ] }));
$r->put_developer('dev@example.com', {});
sub buy { $r->create_subscription(owner => 'dev@example.com', product => 'p', plan => $_[0], now => ms('2027-03-01')) }
sub win { my ($c) = @_; return { map { $_->{name} => "$_->{remaining}/$_->{reset}" } @{ $c->{windows} } } }

my $T0 = ms('2027-03-10T12:00:00');

# plan rate refuses: plan quota and both location windows as before the call
my $s = buy('r2q');
my %loc = (key => $s->{primary}, api => 'a', loc_rate => [ 10, 3600 ], loc_quota => [ 10, 'day' ], scope => 'a');
$r->check(%loc, now => $T0) for 1 .. 2;
my $c = $r->check(%loc, now => $T0);
is($c->{result}, 'rate_limited', 'the plan rate refuses the third call');
is_deeply(win($c), { 'plan-rate' => '0/3600', 'plan-quota' => '48/' . (22 * 86400 - 12 * 3600),
                     'loc-rate' => '8/720', 'loc-quota' => '8/43200' },
          'plan-rate 0; the others show the two calls counted, not the third');

# a daily quota refuses: the location rate window keeps its slot
my $q = buy('q2');
%loc = (key => $q->{primary}, api => 'a', loc_rate => [ 5, 60 ], scope => 'b');
$r->check(%loc, now => $T0 + $_) for 0 .. 1;
$c = $r->check(%loc, now => $T0 + 2);
is($c->{result}, 'quota_exceeded', 'the plan quota refuses the third call');
is(win($c)->{'loc-rate'}, '3/24', 'loc-rate: 3 remaining, reset as after two calls');
is(win($c)->{'plan-quota'}, '0/43200', 'plan-quota 0');

done_testing;
