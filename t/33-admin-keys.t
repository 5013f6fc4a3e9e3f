#!/usr/bin/perl
# Management API: key rotation. A regenerated key is shown once, the old one
# is refused at once, the other slot keeps working; no rotation once final.
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
$api->post('/developers', { email => 'ann@example.com' });
# weather-gold: 50 calls a second, manual approval
my $s = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-gold' })->{json};
my $base = "$DEV/subscriptions/$s->{name}";
is($api->post("$base:activate")->{json}{state}, 'active', 'activated');
is($api->call($s->{primary})->{status}, 200, 'primary served');

# --- rotate the primary
my $res = $api->post("$base/keys/primary:regenerate");
is($res->{status}, 200, 'regenerate primary');
my $p2 = $res->{json}{primary};
ok(Apimon::Redis::key_valid($p2), 'a valid new key');
isnt($p2, $s->{primary}, 'a different key');
is(Apimon::Redis::key_sub_id($p2), $s->{name}, 'for the same subscription');
ok(!exists $res->{json}{secondary}, 'only the regenerated key is shown');
is($res->{json}{name}, $s->{name}, 'the subscription');
is($res->{json}{state}, 'active', 'state unchanged');
is($r->cmd('HGET', Apimon::Redis::sub_key($s->{name}), 'kp'), Apimon::Redis::key_digest($p2), 'the new digest is stored');

is($api->call($s->{primary})->{status}, 401, 'old primary refused at once');
is($api->call($p2)->{status}, 200, 'new primary served');
is($api->call($s->{secondary})->{status}, 200, 'secondary still served');

# --- rotate the secondary
$res = $api->post("$base/keys/secondary:regenerate");
my $s2 = $res->{json}{secondary};
ok(Apimon::Redis::key_valid($s2), 'new secondary');
ok(!exists $res->{json}{primary}, 'primary not shown');
is($api->call($s->{secondary})->{status}, 401, 'old secondary refused');
is($api->call($s2)->{status}, 200, 'new secondary served');
is($api->call($p2)->{status}, 200, 'primary still served');
unlike($api->get($base)->{content}, qr/ak2?_/, 'the view shows no key');

# --- bad paths
is($api->post("$base/keys/tertiary:regenerate")->{status}, 404, 'unknown slot');
is($api->post("$base/keys/primary:rotate")->{status}, 404, 'unknown key action');
is($api->post("$base/keys/primary")->{status}, 404, 'no action');
is($api->get("$base/keys/primary:regenerate")->{status}, 405, 'GET a regenerate');
is($api->post("/developers/bob\@example.com/subscriptions/$s->{name}/keys/primary:regenerate")->{status}, 404,
   "somebody else's subscription");
is($api->call($p2)->{status}, 200, 'failed regenerations changed nothing');

# --- no new key for a final subscription
$api->post("$base:cancel");
$res = $api->post("$base/keys/primary:regenerate");
is($res->{status}, 409, 'regenerate on a cancelled subscription: 409');
like($res->{json}{detail}, qr/subscription is cancelled/, 'detail');
is($r->cmd('HGET', Apimon::Redis::sub_key($s->{name}), 'kp'), Apimon::Redis::key_digest($p2), 'digest unchanged');

# --- audit: rotations recorded without keys
my $audit = $api->get('/audit')->{json}{entries};
is_deeply([ map { $_->{action} } grep { $_->{target} eq $s->{name} } @$audit ],
          [ 'subscription.create', 'subscription.activate', 'subscription.key.primary',
            'subscription.key.secondary', 'subscription.cancel' ],
          'rotations are audited');
unlike(JSON::PP->new->encode($audit), qr/ak2?_|"kp"|"ks"/, 'no key in the audit');

$n->stop;
unlike(Apimon::Admin::own_log($n), qr/ak2?_[0-9a-f]{32}/, 'no key in the error log');
is_deeply([ $n->alerts ], [], 'no alerts');
done_testing;
