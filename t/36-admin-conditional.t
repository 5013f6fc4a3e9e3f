#!/usr/bin/perl
# Management API: conditional request headers (If-Match, If-Unmodified-Since,
# If-None-Match) never turn an answer into nginx's own 412 or 304. Every
# endpoint answers as the API decided; a regenerated key is delivered and the
# old one refused. (If-Match: * here, which every existing record matches: a
# stale If-Match is the API's own 412, t/60-admin-etag.t.)
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Redis::catalog_fixture());
my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);

my %COND = (
    'If-Match'            => '*',
    'If-Unmodified-Since' => 'Thu, 01 Jan 2004 00:00:00 GMT',
    'If-None-Match'       => '*',
);

my $i = 0;
for my $h (sort keys %COND) {
    my %o = (headers => { $h => $COND{$h} });
    my $t = "$h: $COND{$h}";
    $i++;
    my $email = "c$i\@example.com";
    my $DEV = "/developers/$email";
    my $AG = "/appgroups/team-$i";

    # answers: (status, its JSON) as the API made them
    my $ok = sub {
        my ($res, $status, $name) = @_;
        is($res->{status}, $status, "$t: $name: $status");
        like($res->{headers}{'content-type'} // '', qr{^application/json}, "$t: $name: the API's JSON");
        return $res->{json} || {};
    };

    $ok->($api->get('/apiproducts', undef, %o), 200, 'GET apiproducts');
    $ok->($api->get('/apiproducts/weather', undef, %o), 200, 'GET an apiproduct');
    $ok->($api->post('/developers', { email => $email }, %o), 201, 'POST developer');
    my $j = $ok->($api->put($DEV, { firstName => "Ann$i" }, %o), 200, 'PUT developer');
    is($j->{firstName}, "Ann$i", "$t: PUT developer: the answer shows the change");
    is($api->get($DEV)->{json}{firstName}, "Ann$i", "$t: PUT developer: and it is stored");
    $ok->($api->get($DEV, undef, %o), 200, 'GET developer');
    $ok->($api->get('/developers', undef, %o), 200, 'GET developers');
    $ok->($api->post('/appgroups', { name => "team-$i" }, %o), 201, 'POST appgroup');
    $j = $ok->($api->put($AG, { displayName => "Team $i" }, %o), 200, 'PUT appgroup');
    is($j->{displayName}, "Team $i", "$t: PUT appgroup: the answer shows the change");

    my $s = $ok->($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-gold' }, %o),
                  201, 'purchase');
    my $base = "$DEV/subscriptions/$s->{name}";
    $ok->($api->get("$DEV/subscriptions", undef, %o), 200, 'GET subscriptions');
    $ok->($api->get($base, undef, %o), 200, 'GET subscription');
    $ok->($api->get("$base/usage?from=2026-01-01&to=2026-01-02", undef, %o), 200, 'GET usage');
    $ok->($api->get('/audit', undef, %o), 200, 'GET audit');

    for my $a ([ activate => 'active' ], [ suspend => 'suspended' ], [ resume => 'active' ]) {
        $j = $ok->($api->post("$base:$a->[0]", undef, %o), 200, ":$a->[0]");
        is($j->{state}, $a->[1], "$t: :$a->[0]: the answer shows the new state");
        is($api->get($base)->{json}{state}, $a->[1], "$t: :$a->[0]: and it is stored");
    }

    for my $slot (qw(primary secondary)) {
        $j = $ok->($api->post("$base/keys/$slot:regenerate", undef, %o), 200, "$slot:regenerate");
        ok(Apimon::Redis::key_valid($j->{$slot} // ''), "$t: $slot:regenerate: the new key is in the answer");
        is($api->call($j->{$slot})->{status}, 200, "$t: $slot:regenerate: the new key is served");
        is($api->call($s->{$slot})->{status}, 401, "$t: $slot:regenerate: the old key is refused");
    }

    # a refusal stays the API's own refusal
    my $res = $api->post("$base:resume", undef, %o);
    is($res->{status}, 409, "$t: a refused action: 409");
    like($res->{headers}{'content-type'} // '', qr{^application/problem\+json}, "$t: a refused action: problem+json");

    for my $a ([ cancel => 'cancelled' ]) {
        $j = $ok->($api->post("$base:$a->[0]", undef, %o), 200, ":$a->[0]");
        is($j->{state}, $a->[1], "$t: :$a->[0]: the answer shows the new state");
    }
    my $e = $api->post("$DEV/subscriptions", { apiproduct => 'maps', plan => 'maps-basic' })->{json};
    $j = $ok->($api->post("$DEV/subscriptions/$e->{name}:expire", undef, %o), 200, ':expire');
    is($j->{state}, 'expired', "$t: :expire: the answer shows the new state");
}

$n->stop;
is_deeply([ $n->alerts ], [], 'no alerts');
done_testing;
