#!/usr/bin/perl
# catalog_apply: stored layout, version bump, validation (all-or-nothing),
# refusal to remove what subscriptions use, schema version check.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Apimon::Redis;

my $r = Apimon::Redis->start;
my $J = JSON::PP->new->canonical;
my $fixture = $J->decode(Apimon::Redis::catalog_fixture());
sub doc { $J->encode($_[0]) }
sub clone { $J->decode($J->encode($_[0])) }
sub err { my $v = $r->try_script('catalog_apply', [], [ ref $_[0] ? doc($_[0]) : $_[0], 0 ]); Apimon::Redis::is_error($v) ? "$v" : "no error: $v" }
sub smembers { [ sort @{ $r->cmd('SMEMBERS', $_[0]) } ] }
my $now = Apimon::Redis::ms_utc('2027-01-05T10:00');

# --- first apply
is($r->run_script('catalog_apply', [], [ Apimon::Redis::catalog_fixture(), $now ]), 1, 'first apply: version 1');
is($r->cmd('GET', 'apimon:schema'), '1', 'layout version stamped');
is_deeply({ @{ $r->cmd('HGETALL', 'apimon:catalog') } },
          { version => 1, applied_ms => $now, json => Apimon::Redis::catalog_fixture() }, 'apimon:catalog');
is_deeply(smembers('apimon:products'), [ 'maps', 'weather' ], 'products set');
is_deeply(smembers('apimon:plans'), [ 'maps-basic', 'weather-bronze', 'weather-free', 'weather-gold' ], 'plans set');
is_deeply({ @{ $r->cmd('HGETALL', 'apimon:product:weather') } },
          { name => 'weather', displayName => 'Weather API', description => 'Forecasts and history',
            apis => ',forecast,history,', defaultPlan => '', nplans => 3, state => 'active' }, 'product hash');
my %plan = @{ $r->cmd('HGETALL', 'apimon:plan:weather-bronze') };
is_deeply($J->decode(delete $plan{pricing}), { model => 'flat', currency => 'usd', amount => 2900 }, 'plan pricing JSON');
is_deeply($J->decode(delete $plan{json}), $fixture->{plans}[1], 'plan json is the whole object');
is_deeply(\%plan, { name => 'weather-bronze', product => 'weather', displayName => 'Bronze', approval => 'auto', suspension => 'charge',
                    rate_n => 5, rate_w => 1, quota_n => 1000, quota_unit => 'month', retired => '0' }, 'plan hash');
my %gold = @{ $r->cmd('HGETALL', 'apimon:plan:weather-gold') };
is($gold{approval}, 'manual', 'manual approval stored');
is($J->decode($gold{pricing})->{tiers}[1]{upTo}, undef, 'null upTo survives');
is($r->cmd('HGET', 'apimon:plan:maps-basic', 'rate_w'), 60, 'per minute = 60 s');

# defaults: approval auto, no limits
my $d = clone($fixture);
push @{ $d->{plans} }, { name => 'bare', product => 'maps', pricing => { model => 'free' } };
push @{ $d->{plans} }, { name => 'hourly', product => 'maps', rateLimit => { limit => 7, per => 'hour' },
                         quota => { limit => 9, period => 'week' }, pricing => { model => 'free' } };
is($r->apply_catalog(doc($d)), 2, 'second apply: version 2');
is_deeply([ $r->cmd('HMGET', 'apimon:plan:bare', qw(approval rate_n rate_w quota_n quota_unit displayName)) ]->[0],
          [ 'auto', 0, 0, 0, '', '' ], 'defaults: auto, no windows');
is_deeply($r->cmd('HMGET', 'apimon:plan:hourly', qw(rate_n rate_w quota_n quota_unit)), [ 7, 3600, 9, 'week' ], 'per hour, week quota');

# --- validation: each refused with a path, nothing written
my @cases = (
    [ 'not json', '{"products": [', qr/catalog: not a JSON object/ ],
    [ 'array top', '[]', qr/products: must be an array/ ],
    [ 'no plans', '{"products": []}', qr/plans: must be an array/ ],
    [ 'products object', '{"products": {"a": 1}, "plans": []}', qr/products: must be an array/ ],
    [ 'bad product name', sub { $_[0]{products}[1]{name} = 'we ather' }, qr/products\[1\]\.name: must match/ ],
    [ 'long name', sub { $_[0]{products}[0]{name} = 'x' x 65 }, qr/products\[0\]\.name/ ],
    [ 'duplicate product', sub { $_[0]{products}[1]{name} = 'weather' }, qr/products\[1\]\.name: duplicate/ ],
    [ 'bad api', sub { $_[0]{products}[0]{apis}[1] = 'a/b' }, qr/products\[0\]\.apis\[1\]: must match/ ],
    [ 'apis missing', sub { delete $_[0]{products}[0]{apis} }, qr/products\[0\]\.apis: must be an array/ ],
    [ 'duplicate api', sub { $_[0]{products}[0]{apis} = [ 'a', 'a' ] }, qr/duplicate api/ ],
    [ 'displayName type', sub { $_[0]{products}[0]{displayName} = 5 }, qr/products\[0\]\.displayName: must be a string/ ],
    [ 'bad plan name', sub { $_[0]{plans}[2]{name} = '' }, qr/plans\[2\]\.name: must match/ ],
    [ 'duplicate plan', sub { $_[0]{plans}[2]{name} = 'weather-free' }, qr/plans\[2\]\.name: duplicate plan/ ],
    [ 'unknown product', sub { $_[0]{plans}[0]{product} = 'nope' }, qr/plans\[0\]\.product: no such product/ ],
    [ 'approval', sub { $_[0]{plans}[0]{approval} = 'maybe' }, qr/plans\[0\]\.approval: must be auto or manual/ ],
    [ 'rate limit 0', sub { $_[0]{plans}[0]{rateLimit}{limit} = 0 }, qr/plans\[0\]\.rateLimit\.limit: must be an integer >= 1/ ],
    [ 'rate limit float', sub { $_[0]{plans}[0]{rateLimit}{limit} = 1.5 }, qr/plans\[0\]\.rateLimit\.limit/ ],
    [ 'rate per', sub { $_[0]{plans}[0]{rateLimit}{per} = 'week' }, qr/plans\[0\]\.rateLimit\.per: must be second, minute, hour or day/ ],
    [ 'quota limit', sub { $_[0]{plans}[1]{quota}{limit} = -1 }, qr/plans\[1\]\.quota\.limit/ ],
    [ 'quota period', sub { $_[0]{plans}[1]{quota}{period} = 'year' }, qr/plans\[1\]\.quota\.period: must be second, minute, hour, day, week or month/ ],
    [ 'quota not object', sub { $_[0]{plans}[1]{quota} = 5 }, qr/plans\[1\]\.quota: must be an object/ ],
    [ 'pricing missing', sub { delete $_[0]{plans}[3]{pricing} }, qr/plans\[3\]\.pricing: is required/ ],
    [ 'pricing model', sub { $_[0]{plans}[3]{pricing}{model} = 'barter' }, qr/plans\[3\]\.pricing\.model: unknown pricing model/ ],
    [ 'currency', sub { $_[0]{plans}[1]{pricing}{currency} = 'USD' }, qr/plans\[1\]\.pricing\.currency: must be a lowercase ISO 4217 code/ ],
    [ 'amount', sub { $_[0]{plans}[1]{pricing}{amount} = 29.5 }, qr/plans\[1\]\.pricing\.amount: must be an integer >= 0/ ],
    [ 'tiers', sub { $_[0]{plans}[2]{pricing}{tiers} = 'many' }, qr/plans\[2\]\.pricing\.tiers: must be an array/ ],
);
my $ver = $r->cmd('HGET', 'apimon:catalog', 'version');
my $json_before = $r->cmd('HGET', 'apimon:catalog', 'json');
for my $c (@cases) {
    my ($name, $mut, $re) = @$c;
    my $text = $mut;
    if (ref $mut) { my $x = clone($d); $mut->($x); $text = doc($x) }
    my $e = err($text);
    like($e, qr/^ERR apimon bad_request: /, "$name: bad_request");
    like($e, $re, "$name: message names the field");
}
is($r->cmd('HGET', 'apimon:catalog', 'version'), $ver, 'refused documents did not bump the version');
is($r->cmd('HGET', 'apimon:catalog', 'json'), $json_before, '...nor replace the document');
ok($r->cmd('EXISTS', 'apimon:plan:bare'), 'nor touch plans');

# free plans need no currency
my $f = clone($d);
delete $f->{plans}[0]{pricing}{currency};
is($r->apply_catalog(doc($f)), $ver + 1, 'free plan without currency is fine');

# --- removal: unused plans and products go, used ones are a conflict
$r->put_developer('dev@example.com', {});
my $s = $r->create_subscription(owner => 'dev@example.com', product => 'maps', plan => 'hourly');
my $no_hourly = clone($d);
$no_hourly->{plans} = [ grep { $_->{name} ne 'hourly' } @{ $no_hourly->{plans} } ];
$ver = $r->cmd('HGET', 'apimon:catalog', 'version');
like(err($no_hourly), qr/^ERR apimon conflict: plan hourly is used by 1 subscription/, 'removing a used plan: conflict');
my $no_maps = clone($d);
$no_maps->{products} = [ grep { $_->{name} ne 'maps' } @{ $no_maps->{products} } ];
$no_maps->{plans} = [ grep { $_->{product} ne 'maps' } @{ $no_maps->{plans} } ];
like(err($no_maps), qr/^ERR apimon conflict: plan (hourly|maps-basic|bare)/, 'removing a used product: conflict');
my $moved = clone($d);
$_->{product} = 'weather' for grep { $_->{name} eq 'hourly' } @{ $moved->{plans} };
like(err($moved), qr/^ERR apimon conflict: plan hourly is used .* cannot move from product maps/, 'moving a used plan: conflict');
is($r->cmd('HGET', 'apimon:catalog', 'version'), $ver, 'conflicts write nothing');

my $no_bare = clone($d);
$no_bare->{plans} = [ grep { $_->{name} ne 'bare' } @{ $no_bare->{plans} } ];
is($r->apply_catalog(doc($no_bare)), $ver + 1, 'removing an unused plan works');
is($r->cmd('EXISTS', 'apimon:plan:bare'), 0, 'its hash is gone');
ok(!grep({ $_ eq 'bare' } @{ smembers('apimon:plans') }), 'and its set entry');

$r->set_state($s->{id}, 'cancel');
like(err($no_hourly), qr/conflict/, 'a cancelled subscription still holds its plan');

my $extra = clone($no_bare);
push @{ $extra->{products} }, { name => 'tmp', apis => [] };
$r->apply_catalog(doc($extra));
is($r->cmd('HGET', 'apimon:product:tmp', 'apis'), ',', 'a product with no apis');
$r->apply_catalog(doc($no_bare));
is($r->cmd('EXISTS', 'apimon:product:tmp'), 0, 'removing an unused product works');

# --- unchanged limits leave subscriptions alone; changed ones are rewritten
$r->cmd('HSET', $s->{key}, 'rate_n', 'sentinel');
$r->apply_catalog(doc($no_bare));
is($r->cmd('HGET', $s->{key}, 'rate_n'), 'sentinel', 'same limits: subscriptions not rewritten');
my $chg = clone($no_bare);
$_->{rateLimit}{limit} = 8 for grep { $_->{name} eq 'hourly' } @{ $chg->{plans} };
$r->apply_catalog(doc($chg));
is_deeply($r->cmd('HMGET', $s->{key}, qw(rate_n rate_w quota_n quota_unit apis)), [ 8, 3600, 9, 'week', ',tiles,' ],
          'changed limits: mirrored fields rewritten');

# --- schema version
$r->cmd('SET', 'apimon:schema', '2');
like(err($chg), qr/^ERR apimon schema: /, 'another layout version: schema error');
$r->cmd('SET', 'apimon:schema', '1');

done_testing;
