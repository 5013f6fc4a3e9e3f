#!/usr/bin/perl
# Management API: a product is purchasable by name alone (Apigee's body
# {"apiproduct": ...}): its defaultPlan, declared in the catalog and checked
# by `billing-agent catalog apply`, or its only plan; without either the
# refusal names both options.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use File::Temp qw(tempdir);
use Apimon::Redis;
use Apimon::Admin;
use Apimon::Agent qw(run_agent agent_env);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $env = agent_env($r, undef);
my $dir = tempdir(CLEANUP => 1);
my $J = JSON::PP->new->canonical;

*problem_ok = \&Apimon::Admin::problem_ok;

sub flat { my ($name, $product, $amount) = @_;
    return { name => $name, product => $product, displayName => $name,
             pricing => { model => 'flat', currency => 'usd', amount => $amount } } }

my $catalog = {
    products => [
        { name => 'HelloworldProduct', apis => [ 'forecast' ], defaultPlan => 'hello-basic' },
        { name => 'single', apis => [ 'tiles' ] },
        { name => 'multi', apis => [ 'forecast' ] },
    ],
    plans => [ flat('hello-pro', 'HelloworldProduct', 5000), flat('hello-basic', 'HelloworldProduct', 1000),
               flat('single-only', 'single', 700),
               flat('m1', 'multi', 100), flat('m2', 'multi', 200), flat('m3', 'multi', 300) ],
};

sub apply {
    my ($doc, $name) = @_;
    my $f = "$dir/$name.json";
    open my $fh, '>', $f or die;
    print $fh (ref $doc ? $J->encode($doc) : $doc);
    close $fh;
    return run_agent(env => $env, args => [ 'catalog', 'apply', $f ]);
}

# --- catalog apply checks defaultPlan
my $run = apply($catalog, 'good');
is($run->{rc}, 0, 'a catalog with a defaultPlan applies') or diag $run->{err};

for my $case (
    [ 'nope', qr/products\[0\]\.defaultPlan: no plan named nope/, 'a plan that does not exist' ],
    [ 'm1', qr/products\[0\]\.defaultPlan: plan m1 is a plan of product multi/, "another product's plan" ],
    [ [ 'hello-basic' ], qr/products\[0\]\.defaultPlan: must be a string/, 'not a string' ],
    [ 'a b', qr/products\[0\]\.defaultPlan: must match/, 'not a name' ],
) {
    my $bad = $J->decode($J->encode($catalog));
    $bad->{products}[0]{defaultPlan} = $case->[0];
    $run = apply($bad, 'bad');
    is($run->{rc}, 2, "catalog apply refuses $case->[2]: exit 2");
    like($run->{err}, $case->[1], "catalog apply refuses $case->[2]: names the field");
}
is($r->cmd('HGET', 'apimon:catalog', 'version'), 1, 'the refused catalogs changed nothing');

my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);
is($api->post('/developers', { email => 'ann@example.com' })->{status}, 201, 'developer');
is($api->post('/appgroups', { name => 'team-a' })->{status}, 201, 'app group');

# --- the Apigee body, exactly
for my $owner ('/developers/ann@example.com', '/appgroups/team-a') {
    my $res = $api->post("$owner/subscriptions", '{"apiproduct":"HelloworldProduct"}');
    is($res->{status}, 201, "$owner: {\"apiproduct\":\"HelloworldProduct\"}: 201");
    is($res->{json}{plan}, 'hello-basic', "$owner: the product's defaultPlan");
    is($api->call($res->{json}{primary})->{status}, 200, "$owner: its key is served");
    $res = $api->post("$owner/subscriptions", { apiproduct => 'single' });
    is($res->{status}, 201, "$owner: a product with one plan: 201");
    is($res->{json}{plan}, 'single-only', "$owner: its only plan");
    $res = $api->post("$owner/subscriptions", { apiproduct => 'HelloworldProduct', plan => 'hello-pro' });
    is($res->{json}{plan}, 'hello-pro', "$owner: a plan named is the plan bought");
}

my $subs0 = $r->cmd('SCARD', 'apimon:subs');
problem_ok($api->post('/developers/ann@example.com/subscriptions', { apiproduct => 'multi' }), 400,
           qr/^plan: is required: product multi has 3 plans and no defaultPlan$/, 'several plans, no default');
problem_ok($api->post('/developers/ann@example.com/subscriptions', { apiproduct => 'multi', plan => undef }), 400,
           qr/^plan: is required: product multi has 3 plans and no defaultPlan$/, 'plan null');
problem_ok($api->post('/developers/ann@example.com/subscriptions', { apiproduct => 'nope' }), 404,
           qr/no such product nope/, 'no plan, unknown product');
is($r->cmd('SCARD', 'apimon:subs'), $subs0, 'the refusals created nothing');

# --- the catalog as the API shows it: the default of each product
my %p = map { $_->{name} => $_ } @{ $api->get('/apiproducts')->{json}{apiProduct} };
is($p{HelloworldProduct}{defaultPlan}, 'hello-basic', 'GET apiproducts: the declared defaultPlan');
is($p{single}{defaultPlan}, 'single-only', 'GET apiproducts: the only plan is the default');
ok(!exists $p{multi}{defaultPlan}, 'GET apiproducts: no default for several plans');
is($api->get('/apiproducts/single')->{json}{defaultPlan}, 'single-only', 'GET an apiproduct: its default');

# --- the example catalog declares its defaults
$r->flushall;
$api->post('/developers', { email => 'ann@example.com' });
$run = run_agent(env => $env, args => [ 'catalog', 'apply', "$FindBin::Bin/../schema/catalog.example.json" ]);
is($run->{rc}, 0, 'the example catalog applies') or diag $run->{err};
my $res = $api->post('/developers/ann@example.com/subscriptions', { apiproduct => 'weather' });
is($res->{status}, 201, 'example: weather by name alone');
is($res->{json}{plan}, 'weather-free', "example: weather's defaultPlan");

$n->stop;
is_deeply([ $n->alerts ], [], 'no alerts');
done_testing;
