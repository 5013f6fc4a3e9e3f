#!/usr/bin/perl
# Management API: purchase, list (pagination), view with quota, every state
# transition and its effect on a protected location, refused transitions,
# subscriptions of app groups.
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

*problem_ok = \&Apimon::Admin::problem_ok;

my $UUID = qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
my $DEV = '/developers/ann@example.com';
is($api->post('/developers', { email => 'ann@example.com' })->{status}, 201, 'developer');

# --- purchase
my $t0 = time * 1000;
my $res = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' });
is($res->{status}, 201, 'purchase: 201');
my $s = $res->{json};
like($s->{name}, $UUID, 'name is a v4 UUID');
is($s->{apiproduct}, 'weather', 'apiproduct');
is($s->{plan}, 'weather-bronze', 'plan');
is($s->{state}, 'active', 'auto approval: active');
is($s->{developer}, 'ann@example.com', 'owner');
for my $f (qw(startTime createdAt lastModifiedAt)) {
    like($s->{$f}, qr/^\d{13}$/, "$f: ms as a string");
    ok(abs($s->{$f} - $t0) < 60000, "$f: now");
}
ok(!exists $s->{endTime}, 'no endTime');
ok(Apimon::Redis::key_valid($s->{primary}), 'primary key: valid shape and checksum');
ok(Apimon::Redis::key_valid($s->{secondary}), 'secondary key: valid shape and checksum');
isnt($s->{primary}, $s->{secondary}, 'two different keys');
is(Apimon::Redis::key_sub_id($s->{primary}), $s->{name}, 'the key names its subscription');
is($res->{headers}{location}, "$Apimon::Admin::ORG_BASE$DEV/subscriptions/$s->{name}", 'Location');
my $h = { @{ $r->cmd('HGETALL', Apimon::Redis::sub_key($s->{name})) } };
is($h->{kp}, Apimon::Redis::key_digest($s->{primary}), 'Redis holds the primary digest');
is($h->{ks}, Apimon::Redis::key_digest($s->{secondary}), 'Redis holds the secondary digest');
unlike(join(' ', %$h), qr/ak2?_/, 'the keys themselves are not stored');

is($api->call($s->{primary})->{status}, 200, 'primary key served');
is($api->call($s->{secondary})->{status}, 200, 'secondary key served');

# keys are shown only once
$res = $api->get("$DEV/subscriptions/$s->{name}");
is($res->{status}, 200, 'view');
ok(!exists $res->{json}{primary} && !exists $res->{json}{secondary}, 'keys are not shown again');
unlike($res->{content}, qr/ak2?_/, 'no key in the view');
is($res->{json}{quota}{limit}, 1000, 'quota limit');
is($res->{json}{quota}{used}, 2, 'quota used: the two calls');
is($res->{json}{quota}{remaining}, 998, 'quota remaining');
like($res->{json}{quota}{periodStart}, qr/^\d{13}$/, 'period start');
like($res->{json}{quota}{periodEnd}, qr/^\d{13}$/, 'period end');
ok($res->{json}{quota}{remainingTime} > 0 && $res->{json}{quota}{remainingTime} <= 31 * 86400000, 'remaining time in the month');

# --- purchase: bad input changes nothing
my $subs0 = $r->cmd('SCARD', 'apimon:subs');
problem_ok($api->post("$DEV/subscriptions", { plan => 'weather-bronze' }), 400, qr/^apiproduct: is required/, 'missing apiproduct');
problem_ok($api->post("$DEV/subscriptions", { apiproduct => 'weather' }), 400, qr/^plan: is required/, 'missing plan');
problem_ok($api->post("$DEV/subscriptions", { apiproduct => [ 'weather' ], plan => 'weather-bronze' }), 400, qr/^apiproduct: must be a string/, 'mistyped apiproduct');
problem_ok($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze', startTime => 'soon' }), 400, qr/^startTime:/, 'bad startTime');
problem_ok($api->post("$DEV/subscriptions", { apiproduct => 'nope', plan => 'weather-bronze' }), 404, qr/no such product nope/, 'unknown product');
problem_ok($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'nope' }), 404, qr/no such plan nope/, 'unknown plan');
problem_ok($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'maps-basic' }), 400, qr/not a plan of product weather/, 'plan of another product');
problem_ok($api->post('/developers/nobody@example.com/subscriptions', { apiproduct => 'weather', plan => 'weather-bronze' }), 404, qr/no such developer/, 'unknown developer');
problem_ok($api->post("$DEV/subscriptions", '{"apiproduct": '), 400, qr/malformed JSON/, 'malformed JSON');
is($r->cmd('SCARD', 'apimon:subs'), $subs0, 'no subscription was created by the failures');

# --- startTime in the future: not yet in effect
my $later = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze',
                                               startTime => sprintf('%d', $t0 + 86400000) })->{json};
is($later->{startTime}, sprintf('%d', $t0 + 86400000), 'startTime as given');
is($api->call($later->{primary})->{status}, 403, 'not yet started: refused');

# --- transitions and their effect at once
my $base = "$DEV/subscriptions/$s->{name}";
sub act { my ($a) = @_; $api->post("$base:$a") }

$res = act('suspend');
is($res->{status}, 200, 'suspend');
is($res->{json}{state}, 'suspended', 'suspended');
ok($res->{json}{lastModifiedAt} >= $s->{lastModifiedAt}, 'lastModifiedAt moves');
is($api->call($s->{primary})->{status}, 403, 'suspended: the next call is refused');
problem_ok(act('suspend'), 409, qr/cannot suspend a subscription that is suspended/, 'suspend twice');
problem_ok(act('activate'), 409, qr/cannot activate/, 'activate a suspended one');
$res = act('resume');
is($res->{json}{state}, 'active', 'resume');
is($api->call($s->{primary})->{status}, 200, 'resumed: served again');
problem_ok(act('resume'), 409, qr/cannot resume a subscription that is active/, 'resume an active one');
problem_ok(act('renew'), 400, qr/unknown action "renew"/, 'unknown action');
$res = act('expire');
is($res->{json}{state}, 'expired', 'expire');
like($res->{json}{endTime}, qr/^\d{13}$/, 'endTime set');
ok(abs($res->{json}{endTime} - time * 1000) < 60000, 'endTime is now');
is($api->call($s->{primary})->{status}, 403, 'expired: refused');
is($api->call($s->{secondary})->{status}, 403, 'expired: both keys refused');
problem_ok(act('resume'), 409, qr/cannot resume a subscription that is expired/, 'resume an expired one');
problem_ok(act('cancel'), 409, qr/cannot cancel/, 'cancel an expired one');
is($api->get($base)->{json}{state}, 'expired', 'still expired after the refusals');

# manual approval: submitted -> activate; cancel
$res = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-gold' });
my $g = $res->{json};
is($g->{state}, 'submitted', 'manual approval: submitted');
is($api->call($g->{primary})->{status}, 403, 'submitted: refused');
is($api->post("$DEV/subscriptions/$g->{name}:activate")->{json}{state}, 'active', 'activate');
is($api->call($g->{primary})->{status}, 200, 'activated: served');
$res = $api->post("$DEV/subscriptions/$g->{name}:cancel");
is($res->{json}{state}, 'cancelled', 'cancel');
ok(exists $res->{json}{endTime}, 'cancel sets endTime');
is($api->call($g->{primary})->{status}, 403, 'cancelled: refused');
problem_ok($api->post("$DEV/subscriptions/$g->{name}:activate"), 409, qr/cannot activate/, 'cancelled is final');

# a subscription of somebody else looks like no subscription
$api->post('/developers', { email => 'bob@example.com' });
problem_ok($api->get("/developers/bob\@example.com/subscriptions/$s->{name}"), 404, qr/no such subscription/, "another developer's subscription");
problem_ok($api->post("/developers/bob\@example.com/subscriptions/$g->{name}:expire"), 404, qr/no such subscription/, "another developer's subscription: no change");
problem_ok($api->get("$DEV/subscriptions/" . Apimon::Redis::new_uuid()), 404, qr/no such subscription/, 'unknown subscription');

# --- list with pagination
my @mine = ($s->{name}, $later->{name}, $g->{name});
for (1 .. 4) {
    push @mine, $api->post("$DEV/subscriptions", { apiproduct => 'maps', plan => 'maps-basic' })->{json}{name};
}
$res = $api->get("$DEV/subscriptions");
is($res->{status}, 200, 'list');
my @listed = map { $_->{name} } @{ $res->{json}{developerSubscriptions} };
is_deeply([ sort @listed ], [ sort @mine ], 'all of them');
my @created = map { $_->{createdAt} } @{ $res->{json}{developerSubscriptions} };
is_deeply(\@created, [ sort { $a <=> $b } @created ], 'oldest first (same millisecond: by name)');
unlike($res->{content}, qr/ak2?_|"kp"|"ks"/, 'no keys or digests in the list');
my (@seen, $start, $pages);
do {
    $res = $api->get("$DEV/subscriptions?count=3" . (defined $start ? "&startKey=$start" : ''));
    push @seen, map { $_->{name} } @{ $res->{json}{developerSubscriptions} };
    $start = $res->{json}{nextStartKey};
    $pages++;
} while (defined $start && $pages < 10);
is($pages, 3, '7 subscriptions in pages of 3: 3 pages');
is_deeply(\@seen, \@listed, 'each once, in the order of the whole list');
problem_ok($api->get("$DEV/subscriptions?startKey=" . Apimon::Redis::new_uuid()), 400, qr/^startKey:/, 'startKey of nobody');
problem_ok($api->get("$DEV/subscriptions?startKey=zz"), 400, qr/^startKey:/, 'startKey not a name');
problem_ok($api->get("$DEV/subscriptions?count=1001"), 400, qr/^count:/, 'count over 1000');
problem_ok($api->get('/developers/nobody@example.com/subscriptions'), 404, qr/no such developer/, 'list of an unknown developer');
is_deeply($api->get('/developers/bob@example.com/subscriptions')->{json}, { developerSubscriptions => [] }, 'empty list');

# --- app groups
$api->post('/appgroups', { name => 'team-a' });
$res = $api->post('/appgroups/team-a/subscriptions', { apiproduct => 'weather', plan => 'weather-free' });
is($res->{status}, 201, 'app group purchase');
is($res->{json}{appGroup}, 'team-a', 'owned by the app group');
my $t = $res->{json};
is($api->call($t->{primary})->{status}, 200, 'app group key served');
is_deeply([ map { $_->{name} } @{ $api->get('/appgroups/team-a/subscriptions')->{json}{appGroupSubscriptions} } ],
          [ $t->{name} ], 'appGroupSubscriptions');
is($api->post("/appgroups/team-a/subscriptions/$t->{name}:suspend")->{json}{state}, 'suspended', 'app group suspend');
is($api->call($t->{primary})->{status}, 403, 'app group suspended: refused');
problem_ok($api->get("$DEV/subscriptions/$t->{name}"), 404, qr/no such subscription/, "a developer cannot see an app group's");
problem_ok($api->post('/appgroups/team-z/subscriptions', { apiproduct => 'weather', plan => 'weather-free' }), 404, qr/no such appgroup/, 'unknown app group');

# --- the audit trail of the lifecycle
my $audit = $api->get('/audit?count=1000')->{json}{entries};
my @life = map { $_->{action} } grep { $_->{target} eq $s->{name} } @$audit;
is_deeply(\@life, [ 'subscription.create', 'subscription.suspend', 'subscription.resume', 'subscription.expire' ],
          'every change of the subscription, in order; refusals are not audited');
my ($exp) = grep { $_->{target} eq $s->{name} && $_->{action} eq 'subscription.expire' } @$audit;
is($exp->{before}{state}, 'active', 'before');
is($exp->{after}{state}, 'expired', 'after');
unlike(join(' ', map { $_->{before} ? JSON::PP::encode_json($_->{before}) : '' } @$audit), qr/"kp"|"ks"/, 'no digests in the audit');

$n->stop;
unlike(Apimon::Admin::own_log($n), qr/ak2?_[0-9a-f]{32}/, 'no key in the error log');
is_deeply([ $n->alerts ], [], 'no alerts');
done_testing;
