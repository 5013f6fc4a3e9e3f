#!/usr/bin/perl
# API keys with a keyed tag (schema/README.md, "API keys"): keys issued by
# the management API carry an HMAC tag; a forged key whose tag fails is
# refused 401 like an unknown key without a Redis call; version 1 keys work
# while apimon_key_legacy is on and are refused without Redis when it is off;
# the secret file can hold an older secret for a rotation; a key Redis called
# unknown is refused from the worker's cache until its TTL ends.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes qw(sleep);
use Apimon::Redis;
use Apimon::Nginx;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());

# one worker: the cache is per worker, and each request below is the only one
my $n = Apimon::Nginx->new(workers => 1);
my $tokens = $n->prefix . '/admin.tokens';
{
    open my $fh, '>', $tokens or die $!;
    print $fh "portal:$Apimon::Admin::TOKEN\n";
    close $fh;
}
my $server = <<"CONF";
        location /apimon/ {
            apimon_admin;
            apimon_admin_token_file $tokens;
        }
        location /weather/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }
CONF
my %conf = (redis => $r, server => $server,
            log_format => '$uri $status $apimon_result v=$apimon_key_version');
$n->start(%conf);
my $api = Apimon::Admin->new(nginx => $n);
my $secret = $n->key_secret;

# the check calls Redis has run (EVALSHA, or EVAL after NOSCRIPT)
sub checks {
    my $stats = $r->cmd('INFO', 'commandstats');
    my $sum = 0;
    $sum += $1 while $stats =~ /^cmdstat_eval(?:sha)?:calls=(\d+)/mg;
    return $sum;
}

# one call: its answer and the number of checks Redis ran for it
sub call {
    my ($key) = @_;
    my $before = checks();
    my $res = $n->get('/weather/x', 'X-API-Key' => $key);
    return ($res, checks() - $before);
}

sub refused_alone {
    my ($key, $name) = @_;
    my ($res, $c) = call($key);
    is($res->{status}, 401, "$name: 401");
    is($res->{json}{code}, 'invalid_key', "$name: invalid_key");
    is($c, 0, "$name: Redis ran no check");
    return $res;
}

sub random_b32 { join '', map { ('a' .. 'z', 2 .. 7)[rand 32] } 1 .. $_[0] }

my $DEV = '/developers/dev@example.com';
is($api->post('/developers', { email => 'dev@example.com' })->{status}, 201, 'developer');

# --- keys issued by the management API carry the tag
my $s = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'open' })->{json};
like($s->{primary}, qr/^ak2_[0-9a-f]{32}[a-z2-7]{48}$/, 'purchase: a version 2 primary key');
like($s->{secondary}, qr/^ak2_[0-9a-f]{32}[a-z2-7]{48}$/, 'purchase: a version 2 secondary key');
ok(Apimon::Redis::key_valid($s->{primary}, $secret), 'the tag is HMAC-SHA-256 under the secret, cut to 80 bits');
ok(!Apimon::Redis::key_valid($s->{primary}, 'another secret of 32 characters!'), '... and no other');
is(Apimon::Redis::key_sub_id($s->{primary}), $s->{name}, 'the key names its subscription');
my ($res, $c) = call($s->{primary});
is($res->{status}, 200, 'purchased primary key: 200');
is($c, 1, 'one check in Redis');
is((call($s->{secondary}))[0]{status}, 200, 'purchased secondary key: 200');

my $base = "$DEV/subscriptions/$s->{name}";
my $p2 = $api->post("$base/keys/primary:regenerate")->{json}{primary};
ok(Apimon::Redis::key_valid($p2, $secret), ':regenerate: a tagged key');
is((call($p2))[0]{status}, 200, 'regenerated primary: 200');
($res, $c) = call($s->{primary});
is($res->{status}, 401, 'the old primary (a valid tag) is refused');
is($c, 1, '... by Redis');
my $s2 = $api->post("$base/keys/secondary:regenerate")->{json}{secondary};
is((call($s2))[0]{status}, 200, 'regenerated secondary: 200');

# --- forged keys of the new shape: no Redis, refused like an unknown key
my $unknown = Apimon::Redis::new_key_v2(Apimon::Redis::new_uuid(), $secret);
($res, $c) = call($unknown);
is($res->{status}, 401, 'a well-tagged key nobody holds: 401');
is($c, 1, '... Redis was asked');
my $like = $res;

(my $hex = $s->{name}) =~ tr/-//d;
my %forged = (
    'random tag'                   => 'ak2_' . $hex . random_b32(48),
    'tag under another secret'     => Apimon::Redis::new_key_v2($s->{name}, 'x' x 40),
    'one tag digit changed'        => substr($p2, 0, 83) . (substr($p2, 83) eq 'a' ? 'b' : 'a'),
    'one random digit changed'     => substr($p2, 0, 40) . (substr($p2, 40, 1) eq 'a' ? 'b' : 'a') . substr($p2, 41),
    'another subscription, same tail' => 'ak2_' . ('0' x 32) . substr($p2, 36),
    'an issued key cut short'      => substr($p2, 0, 83),
);
for my $name (sort keys %forged) {
    my $f = refused_alone($forged{$name}, "forged ($name)");
    is($f->{content}, $like->{content}, "forged ($name): the same body as an unknown key");
    is($f->{headers}{'www-authenticate'}, $like->{headers}{'www-authenticate'},
       "forged ($name): the same WWW-Authenticate");
    is($f->{headers}{'content-type'}, $like->{headers}{'content-type'}, "forged ($name): the same type");
}

# --- version 1 keys (issued before the secret): served while legacy is on
my $old = Apimon::Nginx::subscribe($r, 'open');
like($old->{primary}, qr/^ak_[0-9a-f]{32}[a-z2-7]{39}$/, 'a version 1 key');
($res, $c) = call($old->{primary});
is($res->{status}, 200, 'legacy on (default): a version 1 key is served');
is($c, 1, '... after a check in Redis');
my $forged_v1 = Apimon::Redis::new_key(Apimon::Redis::new_uuid());
($res, $c) = call($forged_v1);
is($res->{status}, 401, 'legacy on: a forged version 1 key (right CRC) is refused');
is($c, 1, '... but only Redis can tell (a CRC is no secret)');
refused_alone($forged_v1, 'legacy on: the same forged version 1 key again (unknown-key cache)');

# rotate it (what an operator does before legacy goes off): a tagged key
my $rot = $api->post("$DEV/subscriptions/$old->{id}/keys/primary:regenerate")->{json}{primary};
like($rot, qr/^ak2_/, 'a version 1 key regenerated: now version 2');
is((call($rot))[0]{status}, 200, 'the rotated key: 200');

ok($n->reload(%conf, http => '    apimon_key_legacy off;'), 'reload: apimon_key_legacy off');
refused_alone($old->{secondary}, 'legacy off: a valid version 1 key');
refused_alone(Apimon::Redis::new_key(Apimon::Redis::new_uuid()), 'legacy off: a forged version 1 key');
is((call($rot))[0]{status}, 200, 'legacy off: version 2 keys still served');
is((call($p2))[0]{status}, 200, 'legacy off: the purchased subscription too');

# per location: legacy on only where it is needed
ok($n->reload(%conf, http => '    apimon_key_legacy off;',
              server => $server . "        location /old/ { apimon on; apimon_api forecast;"
                                . " apimon_key_legacy on; proxy_pass http://backend; }\n"),
   'reload: legacy on in one location');
is($n->get('/old/x', 'X-API-Key' => $old->{secondary})->{status}, 200, 'version 1 key served where legacy is on');
refused_alone($old->{secondary}, '... and refused where it is off');

# --- a rotation of the secret: the new one first, the old one still accepted
my $new_secret = join '', map { sprintf '%02x', int rand 256 } 1 .. 32;
ok($n->reload(%conf, key_secret => "$new_secret\n$secret"), 'reload: a new secret, the old one second');
is((call($p2))[0]{status}, 200, 'a key tagged under the old secret: still 200');
my $p3 = $api->post("$base/keys/primary:regenerate")->{json}{primary};
ok(Apimon::Redis::key_valid($p3, $new_secret), 'new keys are tagged under the first secret');
ok(!Apimon::Redis::key_valid($p3, $secret), '... not the old one');
is((call($p3))[0]{status}, 200, 'the new key: 200');
is((call($s2))[0]{status}, 200, 'the secondary, still tagged under the old secret: 200');
ok($n->reload(%conf, key_secret => $new_secret), 'reload: the old secret removed (re-read on reload)');
refused_alone($s2, 'a key tagged under the removed secret');
is((call($p3))[0]{status}, 200, 'keys under the current secret: 200');

# --- the unknown-key cache: a repeated unknown key is answered without Redis
# (a TTL long enough for the calls in between on a busy machine)
my $ttl = Apimon::Nginx::valgrind() ? 6 : 2;
ok($n->reload(%conf, key_secret => $new_secret, http => "    apimon_unknown_key_cache max=64 ttl=${ttl}s;"),
   "reload: cache ttl=${ttl}s");
my $k = Apimon::Redis::new_key_v2($s->{name}, $new_secret);
($res, $c) = call($k);
is($res->{status}, 401, 'unknown key: 401');
is($c, 1, '... from Redis');
for my $i (1 .. 3) {
    refused_alone($k, "the same unknown key again ($i)");
}
# the key becomes valid (as a restore or an import would make it): refused
# for at most the TTL after Redis last called it unknown
$r->set_key($s->{name}, 'secondary', key => $k);
refused_alone($k, 'made valid in Redis: still refused within the TTL');
sleep $ttl + 0.1;
($res, $c) = call($k);
is($res->{status}, 200, 'after the TTL: served');
is($c, 1, '... Redis was asked again');

# an entry expires even while the key keeps coming
$k = Apimon::Redis::new_key_v2($s->{name}, $new_secret);
is((call($k))[1], 1, 'another unknown key: Redis asked');
sleep $ttl * 0.6;
is((call($k))[1], 0, 'within the TTL: cached');
sleep $ttl * 0.5;
is((call($k))[1], 1, 'hits do not extend the TTL: Redis asked again');

# the cache holds at most max= entries: one slot each, replaced by another key
ok($n->reload(%conf, key_secret => $new_secret, http => '    apimon_unknown_key_cache max=1 ttl=1h;'),
   'reload: cache max=1');
my ($ka, $kb) = map { Apimon::Redis::new_key_v2(Apimon::Redis::new_uuid(), $new_secret) } 1 .. 2;
is((call($ka))[1], 1, 'key A: Redis');
is((call($ka))[1], 0, 'key A again: cached');
is((call($kb))[1], 1, 'key B: Redis, takes the only slot');
is((call($ka))[1], 1, 'key A again: no longer cached');

ok($n->reload(%conf, key_secret => $new_secret, http => '    apimon_unknown_key_cache off;'),
   'reload: cache off');
is((call($ka))[1], 1, 'cache off: Redis');
is((call($ka))[1], 1, 'cache off: Redis each time');

# --- without a secret: version 1 keys issued and served, as before
ok($n->reload(%conf, key_secret => undef), 'reload: no apimon_key_secret_file');
my $plain = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'open' })->{json};
like($plain->{primary}, qr/^ak_[0-9a-f]{32}[a-z2-7]{39}$/, 'no secret: purchase issues a version 1 key');
ok(Apimon::Redis::key_valid($plain->{primary}), '... with its CRC');
is((call($plain->{primary}))[0]{status}, 200, '... served');
like($api->post("/developers/dev\@example.com/subscriptions/$plain->{name}/keys/secondary:regenerate")
         ->{json}{secondary}, qr/^ak_[0-9a-f]{32}[a-z2-7]{39}$/, 'no secret: :regenerate issues version 1');
($res, $c) = call($p3);
is($res->{status}, 200, 'no secret: a version 2 key is still served (Redis decides)');
($res, $c) = call($forged{'random tag'});
is($res->{status}, 401, 'no secret: a forged version 2 key is refused');
is($c, 1, '... by Redis (no tag can be told without the secret)');

# $apimon_key_version tells which keys are still of version 1
$n->get('/weather/v1', 'X-API-Key' => $plain->{primary});
$n->get('/weather/v2', 'X-API-Key' => $p3);
$n->get('/weather/bad', 'X-API-Key' => 'ak_nope');
$n->get('/weather/none');
# nginx writes the access log after the answer: wait for the last line
my $log = '';
for (1 .. 100) {
    $log = $n->access_log;
    last if $log =~ m{^/weather/none }m;
    select undef, undef, undef, 0.05;
}
like($log, qr{^/weather/v1 200 allowed v=1$}m, '$apimon_key_version: 1 for a version 1 key');
like($log, qr{^/weather/v2 200 allowed v=2$}m, '$apimon_key_version: 2 for a version 2 key');
like($log, qr{^/weather/bad 401 invalid_key v=-$}m, '$apimon_key_version: empty for a malformed key');
like($log, qr{^/weather/none 401 missing_key v=-$}m, '$apimon_key_version: empty without a key');
like($log, qr{^/weather/x 401 invalid_key v=2$}m, '... and set for a refused key of our shape');

$n->stop;
for my $s ($secret, $new_secret) {
    unlike($n->error_log, qr/\Q$s\E/, 'the secret is not in the error log (debug level)');
}
unlike(Apimon::Admin::own_log($n), qr/ak2?_[0-9a-f]{32}/, 'no key in the error log');

done_testing;
