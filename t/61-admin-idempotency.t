#!/usr/bin/perl
# Management API: Idempotency-Key on a purchase and on :regenerate. A retry
# with the same key replays the first answer (its keys too) with
# Idempotent-Replayed: true and changes nothing; the same key on another path
# or body is 422; the keys kept for the replay are sealed, never plaintext
# in Redis.
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
my $DEV = '/developers/ann@example.com';
is($api->post('/developers', { email => 'ann@example.com' })->{status}, 201, 'developer');
is($api->post('/developers', { email => 'bob@example.com' })->{status}, 201, 'another developer');

my %K = (headers => { 'Idempotency-Key' => 'order-7' });
my $body = { apiproduct => 'weather', plan => 'weather-bronze' };

# --- a purchase retried three times: one subscription, the same keys
my $first = $api->post("$DEV/subscriptions", $body, %K);
is($first->{status}, 201, 'first purchase: 201');
ok(!exists $first->{headers}{'idempotent-replayed'}, 'first purchase: not a replay');
my $s = $first->{json};
ok(Apimon::Redis::key_valid($s->{primary} // ''), 'first purchase: its keys');
for my $try (1 .. 3) {
    my $res = $api->post("$DEV/subscriptions", $body, %K);
    is($res->{status}, 201, "retry $try: 201, as the first");
    is($res->{headers}{'idempotent-replayed'}, 'true', "retry $try: Idempotent-Replayed: true");
    is($res->{json}{name}, $s->{name}, "retry $try: the same subscription");
    is($res->{json}{primary}, $s->{primary}, "retry $try: the same primary key");
    is($res->{json}{secondary}, $s->{secondary}, "retry $try: the same secondary key");
    is($res->{headers}{location}, $first->{headers}{location}, "retry $try: the same Location");
    is($res->{headers}{etag}, $first->{headers}{etag}, "retry $try: the same ETag");
}
is(scalar @{ $api->get("$DEV/subscriptions")->{json}{developerSubscriptions} }, 1, 'one subscription');
is($r->cmd('SCARD', 'apimon:subs'), 1, 'one subscription in Redis');
is($api->call($s->{primary})->{status}, 200, 'the key answered serves');

# the keys are stored sealed: no plaintext anywhere in Redis
my @idem = @{ $r->cmd('KEYS', 'apimon:idem:*') };
is(scalar @idem, 1, 'one idempotency record');
like($idem[0], qr/^apimon:idem:[0-9a-f]{64}$/, 'named by a digest');
my $ttl = $r->cmd('PTTL', $idem[0]);
ok($ttl > 86_000_000 && $ttl <= 86_400_000, 'kept 24 hours');
my %READ = (hash => [ 'HGETALL' ], string => [ 'GET' ], set => [ 'SMEMBERS' ], zset => [ 'ZRANGE', 0, -1 ],
            stream => [ 'XRANGE', '-', '+' ]);
my $flat; $flat = sub { map { ref $_ ? $flat->(@$_) : ($_ // '') } @_ };
my $dump = join "\n", map {
    my $t = $r->cmd('TYPE', $_);
    my ($c, @a) = @{ $READ{$t} || [ 'TYPE' ] };
    $flat->($r->cmd($c, $_, @a));
} @{ $r->cmd('KEYS', '*') };
my ($ps) = $s->{primary} =~ /^.{12}(.{20})/;
unlike($dump, qr/\Q$ps\E/, 'no plaintext key in Redis');
unlike($dump, qr/order-7/, 'nor the Idempotency-Key itself');

# --- the same key for another request: 422, nothing made
my $res = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-free' }, %K);
Apimon::Admin::problem_ok($res, 422, qr/^Idempotency-Key: already used by a request with another path or body/,
                          'same key, another body');
$res = $api->post('/developers/bob@example.com/subscriptions', $body, %K);
Apimon::Admin::problem_ok($res, 422, qr/^Idempotency-Key: already used/, 'same key, another path');
is($r->cmd('SCARD', 'apimon:subs'), 1, '422: nothing made');

# another key: another subscription
$res = $api->post("$DEV/subscriptions", $body, headers => { 'Idempotency-Key' => 'order-8' });
is($res->{status}, 201, 'another key: a new purchase');
isnt($res->{json}{name}, $s->{name}, 'another key: another subscription');

# a refused purchase is not kept: the retry runs again
$res = $api->post("$DEV/subscriptions", { apiproduct => 'nope' }, headers => { 'Idempotency-Key' => 'order-9' });
is($res->{status}, 404, 'a refused purchase');
$res = $api->post("$DEV/subscriptions", { apiproduct => 'nope' }, headers => { 'Idempotency-Key' => 'order-9' });
is($res->{status}, 404, 'its retry is refused again (not a replay)');
ok(!exists $res->{headers}{'idempotent-replayed'}, 'not marked replayed');

# --- :regenerate retried
my $base = "$DEV/subscriptions/$s->{name}";
my %R = (headers => { 'Idempotency-Key' => 'rotate-1' });
my $g1 = $api->post("$base/keys/secondary:regenerate", undef, %R);
is($g1->{status}, 200, ':regenerate: 200');
my $new = $g1->{json}{secondary};
ok(Apimon::Redis::key_valid($new // ''), ':regenerate: a new key');
my $g2 = $api->post("$base/keys/secondary:regenerate", undef, %R);
is($g2->{status}, 200, ':regenerate retried: 200');
is($g2->{headers}{'idempotent-replayed'}, 'true', ':regenerate retried: replayed');
is($g2->{json}{secondary}, $new, ':regenerate retried: the same key');
ok(!exists $g2->{json}{primary}, ':regenerate retried: only that slot');
is($api->call($new)->{status}, 200, 'the key answered serves');
is($api->call($s->{secondary})->{status}, 401, 'the old one is refused');
# a retry carrying the If-Match of the first attempt still replays
my $g3 = $api->post("$base/keys/secondary:regenerate", undef,
                    headers => { 'Idempotency-Key' => 'rotate-1', 'If-Match' => $first->{headers}{etag} });
is($g3->{status}, 200, 'a replay with the first If-Match: 200');
is($g3->{json}{secondary}, $new, 'and the same key');
Apimon::Admin::problem_ok($api->post("$base/keys/primary:regenerate", undef, %R), 422,
                          qr/^Idempotency-Key: already used/, 'the same key on the other slot: 422');

# --- bad keys and places
Apimon::Admin::problem_ok($api->post("$DEV/subscriptions", $body, headers => { 'Idempotency-Key' => 'x' x 256 }),
                          400, qr/^Idempotency-Key: must be 1 to 255 printable ASCII characters/, 'a key of 256 bytes');
Apimon::Admin::problem_ok($api->post("$base:suspend", undef, headers => { 'Idempotency-Key' => 'a' }),
                          400, qr/^Idempotency-Key: taken by a purchase and :regenerate only/, 'on an action');
is($api->get($base)->{json}{state}, 'active', 'the refused action did nothing');

# --- a stored answer that cannot be opened (the record altered): refused, not guessed
for my $rec (@{ $r->cmd('KEYS', 'apimon:idem:*') }) {
    my $sealed = $r->cmd('HGET', $rec, 'sealed');
    substr($sealed, -1, 1) = substr($sealed, -1, 1) eq '0' ? '1' : '0';
    $r->cmd('HSET', $rec, 'sealed', $sealed);
}
Apimon::Admin::problem_ok($api->post("$DEV/subscriptions", $body, %K), 409,
                          qr/^Idempotency-Key: the answer kept for it cannot be opened/, 'a tampered record: 409');
Apimon::Admin::problem_ok($api->post("$base/keys/secondary:regenerate", undef, %R), 409,
                          qr/^Idempotency-Key: the answer kept for it cannot be opened/, 'a tampered record: 409 (:regenerate)');
is($api->call($new)->{status}, 200, 'the tampered replay changed nothing');

# --- without apimon_key_secret_file nothing can be sealed: the header is refused
{
    my $r2 = Apimon::Redis->start;
    $r2->apply_catalog(Apimon::Redis::catalog_fixture());
    my $n2 = Apimon::Admin::start_nginx($r2, key_secret => undef);
    my $api2 = Apimon::Admin->new(nginx => $n2);
    $api2->post('/developers', { email => 'ann@example.com' });
    Apimon::Admin::problem_ok($api2->post("$DEV/subscriptions", $body, %K), 400,
                              qr/^Idempotency-Key: needs apimon_key_secret_file/, 'no key secret: refused');
    is($r2->cmd('SCARD', 'apimon:subs'), 0, 'no key secret: nothing bought');
    is($api2->post("$DEV/subscriptions", $body)->{status}, 201, 'no key secret: a purchase without the header works');
}

my $log = Apimon::Admin::own_log($n);
unlike($log, qr/\Q$ps\E/, 'no key in the error log');
unlike($log, qr/\[(alert|emerg)\]/, 'no alerts');
done_testing();
