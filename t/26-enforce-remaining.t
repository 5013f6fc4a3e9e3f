#!/usr/bin/perl
# Enforcement: a call refused by one window is not counted, so the other
# windows of its RateLimit header show their remaining without it: the quota
# of a call refused by a rate window equals what the management API reads.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(<<'JSON');
{
  "products": [ { "name": "weather", "displayName": "Weather", "apis": ["forecast"] } ],
  "plans": [
    { "name": "rq", "product": "weather", "rateLimit": { "limit": 2, "per": "minute" },
      "quota": { "limit": 10000, "period": "month" }, "pricing": { "model": "free" } },
    { "name": "r5", "product": "weather", "rateLimit": { "limit": 5, "per": "minute" },
      "pricing": { "model": "free" } },
    { "name": "q100", "product": "weather", "quota": { "limit": 100, "period": "month" },
      "pricing": { "model": "free" } }
  ]
}
JSON

my $n = Apimon::Nginx->new(workers => 1);
my $tokens = $n->prefix . '/admin.tokens';
{
    open my $fh, '>', $tokens or die "$tokens: $!";
    print $fh "portal:$Apimon::Admin::TOKEN\n";
    close $fh;
}
$n->start(redis => $r, server => <<"CONF");
        location /apimon/ {
            apimon_admin;
            apimon_admin_token_file $tokens;
        }

        location /weather/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }

        location /lq/ {
            apimon on;
            apimon_api forecast;
            apimon_quota 1 day;
            proxy_pass http://backend;
        }

        location /lr/ {
            apimon on;
            apimon_api forecast;
            apimon_rate 1r/m;
            proxy_pass http://backend;
        }
CONF
my $api = Apimon::Admin->new(nginx => $n);

# RateLimit: "name";r=N;t=S, ... -> { name => { r, t } }
sub state_of {
    my ($res) = @_;
    my %out;
    for my $item (split /,\s*/, $res->{headers}{ratelimit} // '') {
        my ($name, @params) = split /;/, $item;
        $name =~ s/^"(.*)"$/$1/;
        $out{$name} = { map { split /=/, $_, 2 } @params };
    }
    return \%out;
}

sub remaining_by_api {
    my ($s) = @_;
    my $res = $api->get("/developers/dev\@example.com/subscriptions/$s->{id}");
    is($res->{status}, 200, 'management API: the subscription');
    return $res->{json}{quota}{remaining};
}

# --- plan rate refuses, plan quota passes
my $s = Apimon::Nginx::subscribe($r, 'rq');
is($n->get('/weather/x', 'X-API-Key' => $s->{primary})->{status}, 200, "plan rate 2/min: call $_")
    for 1 .. 2;
my $res = $n->get('/weather/x', 'X-API-Key' => $s->{primary});
is($res->{status}, 429, 'plan rate: the third call is 429');
my $st = state_of($res);
is($st->{'plan-rate'}{r}, 0, 'the refused answer: plan-rate r=0');
is($st->{'plan-quota'}{r}, 9998, 'the refused answer: plan-quota r=9998 (two calls counted)');
is(remaining_by_api($s), $st->{'plan-quota'}{r}, 'the management API reads the same remaining');

# --- location rate refuses, plan quota passes
my $q = Apimon::Nginx::subscribe($r, 'q100');
is($n->get('/lr/x', 'X-API-Key' => $q->{primary})->{status}, 200, 'location rate 1/min: call 1');
$res = $n->get('/lr/x', 'X-API-Key' => $q->{primary});
is($res->{status}, 429, 'location rate: call 2 is 429');
$st = state_of($res);
is($st->{'loc-rate'}{r}, 0, 'loc-rate r=0');
is($st->{'plan-quota'}{r}, 99, 'plan-quota r=99');
is(remaining_by_api($q), 99, 'the management API: 99');

# --- location quota refuses, plan rate passes: the rate window keeps its slot
my $p = Apimon::Nginx::subscribe($r, 'r5');
$res = $n->get('/lq/x', 'X-API-Key' => $p->{primary});
is($res->{status}, 200, 'location quota 1/day: call 1');
is(state_of($res)->{'plan-rate'}{r}, 4, 'plan-rate r=4 after one call');
$res = $n->get('/lq/x', 'X-API-Key' => $p->{primary});
is($res->{status}, 403, 'location quota: call 2 refused');
$st = state_of($res);
is($st->{'loc-quota'}{r}, 0, 'loc-quota r=0');
is($st->{'plan-rate'}{r}, 4, 'plan-rate still r=4: the refused call took no slot');
# and the next call through another location sees the same
$res = $n->get('/weather/x', 'X-API-Key' => $p->{primary});
is($res->{status}, 200, 'another location: 200');
is(state_of($res)->{'plan-rate'}{r}, 3, 'plan-rate r=3 after the second accepted call');

$n->stop;
done_testing;
