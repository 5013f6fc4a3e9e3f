#!/usr/bin/perl
# Management API: POST .../subscriptions/{name}:changePlan {"plan", "effective"}.
# Keys, state and attributes stay; the quota used in the current period is
# carried to the new plan's limit; "periodEnd" waits, visible as pendingPlan,
# and is applied by the first management script that reads the subscription
# when due; another product's plan only when the catalog's changeTo allows
# it; refusals precise (problem+json); audited.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Admin;
use JSON::PP;

my $J = JSON::PP->new->canonical;
my $r = Apimon::Redis->start;
$r->apply_catalog($J->encode({
    products => [
        { name => 'weather', apis => ['forecast'], changeTo => ['maps', 'old'] },
        { name => 'maps', apis => ['tiles'] },
        { name => 'old', apis => ['forecast'], state => 'inactive' },
        { name => 'solo', apis => ['forecast'] } ],
    plans => [
        { name => 'weather-bronze', product => 'weather', displayName => 'Bronze',
          quota => { limit => 1000, period => 'month' }, pricing => { model => 'free' } },
        { name => 'weather-silver', product => 'weather', displayName => 'Silver',
          quota => { limit => 2000, period => 'month' }, pricing => { model => 'free' } },
        { name => 'weather-tiny', product => 'weather',
          quota => { limit => 2, period => 'month' }, pricing => { model => 'free' } },
        { name => 'weather-free', product => 'weather',
          quota => { limit => 100, period => 'day' }, pricing => { model => 'free' } },
        { name => 'weather-manual', product => 'weather', approval => 'manual', pricing => { model => 'free' } },
        { name => 'weather-retired', product => 'weather', retired => JSON::PP::true, pricing => { model => 'free' } },
        { name => 'maps-basic', product => 'maps',
          quota => { limit => 500, period => 'week' }, pricing => { model => 'free' } },
        { name => 'old-plan', product => 'old', pricing => { model => 'free' } },
        { name => 'solo-basic', product => 'solo', pricing => { model => 'free' } } ] }));
# changeTo: checked by catalog_apply, naming the field
for my $bad ([ ['nowhere'], qr/products\[0\]\.changeTo: no such product in this catalog: nowhere/ ],
             [ ['weather'], qr/products\[0\]\.changeTo\[0\]: names the product itself/ ],
             [ 'maps', qr/products\[0\]\.changeTo: must be/ ],
             [ ['a b'], qr/products\[0\]\.changeTo\[0\]: must match/ ]) {
    my $v = $r->try_script('catalog_apply', [], [ $J->encode({
        products => [ { name => 'weather', apis => ['forecast'], changeTo => $bad->[0] },
                      { name => 'maps', apis => ['tiles'] } ],
        plans => [ { name => 'p', product => 'weather', pricing => { model => 'free' } } ] }), 0 ]);
    like(Apimon::Redis::is_error($v) ? $v->message : 'applied', $bad->[1], "catalog: bad changeTo refused ($bad->[1])");
}
is($r->cmd('HGET', 'apimon:product:weather', 'changeTo'), ',maps,old,', 'catalog: changeTo stored comma-wrapped');
my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);
my $DEV = '/developers/ann@example.com';
is($api->post('/developers', { email => 'ann@example.com' })->{status}, 201, 'developer');

sub buy {
    my (%b) = @_;
    my $res = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze', %b });
    is($res->{status}, 201, 'purchase ' . ($b{plan} // 'weather-bronze')) or diag explain $res->{json};
    return $res->{json};
}
sub change {
    my ($s, $body, %o) = @_;
    return $api->post("$DEV/subscriptions/$s->{name}:changePlan", $body, %o);
}
sub view { $api->get("$DEV/subscriptions/$_[0]{name}")->{json} }
sub last_audit {
    my $e = $r->cmd('XREVRANGE', 'apimon:audit', '+', '-', 'COUNT', 1)->[0];
    my %f = @{ $e->[1] };
    $f{$_} = decode_json($f{$_}) for grep { $f{$_} ne 'null' } qw(before after);
    return \%f;
}

# --- now, within the product, the same quota unit: the used count goes on
my $s = buy(attributes => [ { name => 'tier', value => 'x' } ]);
my $key = "apimon:sub:{$s->{name}}";
my ($kp, $ks) = @{ $r->cmd('HMGET', $key, 'kp', 'ks') };
is($api->call($s->{primary})->{status}, 200, "call $_") for 1 .. 3;
is(view($s)->{quota}{used}, 3, 'bronze: 3 used');
my $etag = $api->get("$DEV/subscriptions/$s->{name}")->{headers}{etag};
my $res = change($s, { plan => 'weather-silver' });
is($res->{status}, 200, 'changePlan to silver: 200') or diag explain $res->{json};
like($res->{headers}{'content-type'}, qr{^application/json}, 'changePlan: JSON');
is($res->{json}{plan}, 'weather-silver', 'the answer: the new plan');
is($res->{json}{apiproduct}, 'weather', 'the answer: the product');
is($res->{json}{state}, 'active', 'the answer: still active');
is_deeply($res->{json}{attributes}, [ { name => 'tier', value => 'x' } ], 'the answer: its attributes');
ok(!exists $res->{json}{primary}, 'the answer: no key (none made)');
ok(!exists $res->{json}{pendingPlan}, 'the answer: nothing pending');
isnt($res->{headers}{etag}, $etag, 'a new ETag');
is_deeply($r->cmd('HMGET', $key, 'kp', 'ks'), [ $kp, $ks ], 'keys kept (the same digests)');
is($api->call($s->{primary})->{status}, 200, 'the primary key serves on the new plan');
is($api->call($s->{secondary})->{status}, 200, 'and the secondary');
my $v = view($s);
is($v->{quota}{limit}, 2000, "silver's limit");
is($v->{quota}{used}, 5, 'the used count carried (3 before, 2 after)');
like($r->cmd('HGET', $key, 'pol'), qr/\|weather-silver\|weather\|0\|0\|2000\|month\|/, 'the check\'s policy rewritten');
is($r->cmd('SISMEMBER', 'apimon:plan:weather-silver:subs', $s->{name}), 1, 'indexed under silver');
is($r->cmd('SISMEMBER', 'apimon:plan:weather-bronze:subs', $s->{name}), 0, 'no longer under bronze');
ok(defined $r->cmd('ZSCORE', 'apimon:plan:weather-bronze:former', $s->{name}), 'kept in bronze\'s former');
my @h = @{ $r->cmd('LRANGE', "$key:plans", 0, -1) };
is(scalar @h, 2, 'the plan history: two entries');
like($h[0], qr/^\d+\|weather\|weather-bronze$/, '... bronze from the start');
like($h[1], qr/^\d+\|weather\|weather-silver$/, '... then silver');
my $a = last_audit();
is($a->{action}, 'subscription.changePlan', 'audited: subscription.changePlan');
is($a->{who}, 'portal', 'audited: who');
is($a->{target}, $s->{name}, 'audited: target');
is($a->{before}{plan}, 'weather-bronze', 'audited: before');
is($a->{after}{plan}, 'weather-silver', 'audited: after');

# --- another unit (month -> day): today's accepted calls carried
$res = change($s, { plan => 'weather-free', effective => 'now' });
is($res->{status}, 200, 'changePlan to free (a day quota): 200');
$v = view($s);
is($v->{quota}{limit}, 100, "free's limit");
is($v->{quota}{unit}, 'day', "free's unit");
is($v->{quota}{used}, 5, "today's 5 calls carried into the day");
is($api->call($s->{primary})->{status}, 200, 'a call on free');
is(view($s)->{quota}{used}, 6, 'counted on top');

# --- to another product that changeTo lists: its APIs
$res = change($s, { plan => 'maps-basic' });
is($res->{status}, 200, 'changePlan to maps-basic (changeTo): 200');
is($res->{json}{apiproduct}, 'maps', 'the product is maps now');
is($api->call($s->{primary}, path => '/maps/x')->{status}, 200, 'maps entitled');
$res = $api->call($s->{primary});
is($res->{status}, 403, 'weather no longer');
like($res->{content}, qr/not_entitled/, '... not_entitled');
is(view($s)->{quota}{used}, 7, "the week's accepted calls carried (this week's 7)");

# --- month -> none -> month within one month: the calls on the plan between count
my $x = buy();
is($api->call($x->{primary})->{status}, 200, "a call on bronze (month) $_") for 1 .. 2;
is(change($x, { plan => 'weather-manual' })->{status}, 200, 'to a plan without quota');
is($api->call($x->{primary})->{status}, 200, "a call without quota $_") for 1 .. 3;
is(change($x, { plan => 'weather-silver' })->{status}, 200, 'to silver (month)');
is(view($x)->{quota}{used}, 5, 'the month so far: 2 + 3, not the 2 of the state bronze left');
is($api->call($x->{primary})->{status}, 200, 'a call on silver');
is(view($x)->{quota}{used}, 6, '... counted on top');

# --- a smaller limit than what was used: the check refuses at once
my $w = buy();
is($api->call($w->{primary})->{status}, 200, "a call on bronze $_") for 1 .. 3;
is(change($w, { plan => 'weather-tiny' })->{status}, 200, 'to tiny (2 a month)');
$res = $api->call($w->{primary});
is($res->{status}, 403, 'used 3 of 2: refused by the check');
like($res->{content}, qr/quota_exceeded/, '... quota_exceeded');
is(view($w)->{quota}{remaining}, 0, 'nothing remaining');

# --- refusals, nothing changed
my $before = $r->cmd('HGET', $key, 'ver');
my $t = buy();
my @refused = (
    [ $t, { plan => 'weather-bronze' }, 409, qr/is on plan weather-bronze already/, 'the same plan' ],
    [ $t, { plan => 'weather-retired' }, 409, qr/plan weather-retired is retired: not for sale/, 'a retired plan' ],
    [ $t, { plan => 'old-plan' }, 409, qr/product old is inactive: not for sale/, 'an inactive product' ],
    [ $t, { plan => 'solo-basic' }, 409, qr/plan solo-basic is a plan of product solo, and product weather does not list it in changeTo/,
      'a product changeTo does not list' ],
    [ $t, { plan => 'nope' }, 404, qr/plan: no such plan nope/, 'an unknown plan' ],
    [ $t, {}, 400, qr/plan: is required/, 'no plan' ],
    [ $t, { plan => 5 }, 400, qr/plan: must be a string/, 'a plan that is no string' ],
    [ $t, { plan => 'a b' }, 400, qr/plan: must match/, 'a plan that is no name' ],
    [ $t, { plan => 'weather-silver', effective => 'later' }, 400, qr/effective: must be "now" or "periodEnd"/,
      'a bad effective' ],
    [ $t, { plan => 'weather-silver', when => 'now' }, 400, qr/when/, 'an unknown member' ],
    [ { name => Apimon::Redis::new_uuid() }, { plan => 'weather-silver' }, 404, qr/no such subscription/,
      'an unknown subscription' ],
);
for my $c (@refused) {
    my ($sub, $body, $st, $re, $name) = @$c;
    Apimon::Admin::problem_ok(change($sub, $body), $st, $re, $name);
}
Apimon::Admin::problem_ok($api->post("$DEV/subscriptions/$t->{name}:changePlan", 'plan=weather-silver',
    headers => { 'Content-Type' => 'text/plain' }), 415, qr/./, 'a text/plain body');
is(view($t)->{plan}, 'weather-bronze', 'refused: still bronze');
is($r->cmd('HGET', "apimon:sub:{$t->{name}}", 'ver'), 1, 'refused: not one change');

for my $st ([ 'suspend', 'suspended' ], [ 'cancel', 'cancelled' ]) {
    my $u = buy();
    is($api->post("$DEV/subscriptions/$u->{name}:$st->[0]")->{status}, 200, "$st->[0]");
    Apimon::Admin::problem_ok(change($u, { plan => 'weather-silver' }), 409,
        qr/cannot change the plan of a subscription that is $st->[1] \(only an active one\)/, "a $st->[1] one");
}
my $m = buy(plan => 'weather-manual');
Apimon::Admin::problem_ok(change($m, { plan => 'weather-silver' }), 409,
    qr/that is submitted/, 'a submitted one');
my $end = buy(endTime => (time + 86400) * 1000);
Apimon::Admin::problem_ok(change($end, { plan => 'weather-silver', effective => 'periodEnd' }), 409,
    qr/the subscription ends at \d+, not after the change at \d+/, 'periodEnd after its end');

# --- at the period's end: pending, visible, applied when due by a read
my $p = buy();
my $pk = "apimon:sub:{$p->{name}}";
$res = change($p, { plan => 'weather-silver', effective => 'periodEnd' });
is($res->{status}, 200, 'periodEnd: 200');
is($res->{json}{plan}, 'weather-bronze', 'periodEnd: still on bronze');
my @g = gmtime;
my ($ny, $nm) = $g[4] == 11 ? ($g[5] + 1901, 1) : ($g[5] + 1900, $g[4] + 2);
my $at = Apimon::Redis::ms_utc(sprintf('%04d-%02d-01', $ny, $nm));
is_deeply($res->{json}{pendingPlan}, { plan => 'weather-silver', apiproduct => 'weather', effectiveAt => "$at" },
    'pendingPlan: the plan and when (the next month\'s first ms)');
is_deeply(view($p)->{pendingPlan}{plan}, 'weather-silver', 'GET shows it');
my ($lst) = grep { $_->{name} eq $p->{name} }
    @{ $api->get("$DEV/subscriptions")->{json}{developerSubscriptions} };
is($lst->{pendingPlan}{plan}, 'weather-silver', 'the list shows it');
is(view($p)->{quota}{limit}, 1000, 'until then bronze\'s limits');
Apimon::Admin::problem_ok(change($p, { plan => 'weather-silver', effective => 'periodEnd' }), 409,
    qr/a change to weather-silver at \d+ is pending already/, 'the same change again');
$res = change($p, { plan => 'weather-free', effective => 'periodEnd' });
is($res->{json}{pendingPlan}{plan}, 'weather-free', 'another periodEnd change replaces it');
$res = change($p, { plan => 'weather-bronze' });
is($res->{status}, 200, 'back to its plan: 200');
ok(!exists $res->{json}{pendingPlan}, '... withdraws the pending change');
$res = change($p, { plan => 'weather-silver', effective => 'periodEnd' });
ok(!$r->cmd('EXISTS', "$pk:plans"), 'pending: no history yet');

# due: the test moves its time into the past, the next read applies it
my $due = time * 1000 - 60000;
$r->cmd('HSET', $pk, 'nextAt', $due);
$v = view($p);
is($v->{plan}, 'weather-silver', 'due: the next read applies it');
ok(!exists $v->{pendingPlan}, 'due: nothing pending');
is($v->{quota}{limit}, 2000, "due: silver's limits");
like($r->cmd('HGET', $pk, 'pol'), qr/\|weather-silver\|/, "due: the check's policy");
$a = last_audit();
is($a->{action}, 'subscription.changePlan.applied', 'due: audited as applied');
is($a->{who}, 'scheduled', 'due: by "scheduled"');
@h = @{ $r->cmd('LRANGE', "$pk:plans", 0, -1) };
like($h[1], qr/^\d+\|weather\|weather-silver$/, 'due: in the history');
is((split /\|/, $h[1])[0], $due, 'due: the history entry is at its time, not the read\'s');

# a pending change dies with the subscription
my $q = buy();
change($q, { plan => 'weather-silver', effective => 'periodEnd' });
is($api->post("$DEV/subscriptions/$q->{name}:cancel")->{status}, 200, 'cancel with a change pending');
ok(!exists view($q)->{pendingPlan}, 'the pending change is gone');

# an app group's subscription: the same route under /appgroups
is($api->post('/appgroups', { name => 'team' })->{status}, 201, 'app group');
my $ag = $api->post('/appgroups/team/subscriptions', { apiproduct => 'weather', plan => 'weather-bronze' })->{json};
$res = $api->post("/appgroups/team/subscriptions/$ag->{name}:changePlan", { plan => 'weather-silver' });
is($res->{status}, 200, 'app group: 200');
is($res->{json}{appGroup}, 'team', 'app group: its owner');
is($res->{json}{plan}, 'weather-silver', 'app group: changed');
Apimon::Admin::problem_ok($api->post("$DEV/subscriptions/$ag->{name}:changePlan", { plan => 'weather-bronze' }), 404,
    qr/no such subscription/, "another owner's subscription");

# the route: GET on it is 405, the other actions unchanged
my $g405 = $api->get("$DEV/subscriptions/$t->{name}:changePlan");
is($g405->{status}, 405, 'GET :changePlan: 405');
Apimon::Admin::problem_ok($api->post("$DEV/subscriptions/$t->{name}:upgrade"), 400,
    qr/unknown action "upgrade"/, 'another action name: still 400');

# the product taken off sale: a pending change can still be withdrawn
my $wd = buy();
change($wd, { plan => 'weather-silver', effective => 'periodEnd' });
my $doc = $J->decode($r->cmd('HGET', 'apimon:catalog', 'json'));
$_->{state} = 'inactive' for grep { $_->{name} eq 'weather' } @{ $doc->{products} };
$r->apply_catalog($J->encode($doc));
Apimon::Admin::problem_ok(change($wd, { plan => 'weather-free' }), 409, qr/product weather is inactive: not for sale/,
    'inactive: no change to its plans');
$res = change($wd, { plan => 'weather-bronze' });
is($res->{status}, 200, 'inactive: the pending change withdrawn');
ok(!exists $res->{json}{pendingPlan}, '... nothing pending');

done_testing;
