#!/usr/bin/perl
# Lifecycle of the catalog: a product taken off sale (state inactive) and a
# plan retired (final) cannot be bought (409) while their subscriptions go
# on; attributes on products and plans; a plan or product leaves the catalog
# only once no subscription that can still be used or billed refers to it;
# the transitions are audited; the billing agent bills a month past a
# removed plan without complaint.
use strict;
use warnings;
use Test::More;
use POSIX qw(floor);
use JSON::PP;
use File::Temp ();
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Admin;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent agent_env ms);

my $J = JSON::PP->new->canonical;
my $r = Apimon::Redis->start;
my $base_doc = $J->decode(Apimon::Redis::catalog_fixture());
sub doc { my ($f) = @_; my $d = $J->decode($J->encode($base_doc)); $f->($d) if $f; return $J->encode($d) }
sub plan_of { my ($d, $name) = @_; return (grep { $_->{name} eq $name } @{ $d->{plans} })[0] }
sub apply_err { my $t = shift; return eval { $r->apply_catalog($t); 1 } ? 'applied' : $@ }

my ($sec) = @{ $r->cmd('TIME') };
my $now = $sec * 1000;
sub month_start {   # the first day of the month $k months before now, in ms
    my ($k) = @_;
    my @t = gmtime(floor($now / 1000));
    my $m = ($t[5] + 1900) * 12 + $t[4] - $k;
    return ms(sprintf('%04d-%02d-01', int($m / 12), $m % 12 + 1));
}

$r->apply_catalog(doc(sub {
    my ($d) = @_;
    $d->{products}[0]{attributes} = [ { name => 'category', value => 'gold' } ];
    plan_of($d, 'weather-bronze')->{attributes} = [ { name => 'type', value => 'prepaid' } ];
}));
my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);
*problem_ok = \&Apimon::Admin::problem_ok;
my $DEV = '/developers/ann@example.com';
$api->post('/developers', { email => 'ann@example.com' });
$r->set_customer('developer', 'ann@example.com', 'cus_ann');

# --- attributes on products and plans, from the catalog file
my $p = $api->get('/apiproducts/weather')->{json};
is_deeply($p->{attributes}, [ { name => 'category', value => 'gold' } ], 'product attributes shown');
my ($bronze) = grep { $_->{name} eq 'weather-bronze' } @{ $p->{plans} };
is_deeply($bronze->{attributes}, [ { name => 'type', value => 'prepaid' } ], 'plan attributes shown');
is($p->{state}, 'active', 'a product without state shows active');
is($J->encode($bronze->{retired}), 'false', 'a plan without retired shows false');
my ($free) = grep { $_->{name} eq 'weather-free' } @{ $p->{plans} };
is_deeply($free->{attributes}, [], 'a plan without attributes shows []');
is_deeply($api->get('/apiproducts/maps')->{json}{attributes}, [], 'a product without attributes shows []');
like(apply_err(doc(sub { $_[0]{products}[0]{attributes} = [ { name => 'a', value => 'x' x 2049 } ] })),
     qr/products\[0\]\.attributes\[0\]\.value: must be a string of at most 2048 bytes/, 'catalog: a bad product attribute');
like(apply_err(doc(sub { plan_of($_[0], 'weather-free')->{attributes} = [ map { { name => "n$_" } } 1 .. 19 ] })),
     qr/plans\[0\]\.attributes: at most 18 attributes/, 'catalog: too many plan attributes');

my $s1 = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' })->{json};
ok($s1->{primary}, 'a subscription to weather-bronze');

# --- a product taken off sale
like(apply_err(doc(sub { $_[0]{products}[0]{state} = 'paused' })), qr/products\[0\]\.state: must be active or inactive/,
     'state: active or inactive only');
$r->apply_catalog(doc(sub { $_[0]{products}[0]{state} = 'inactive' }));
is($api->get('/apiproducts/weather')->{json}{state}, 'inactive', 'the product shows inactive');
problem_ok($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-free' }), 409,
           qr/^product weather is inactive: not for sale$/, 'an inactive product cannot be bought');
is($api->call($s1->{primary})->{status}, 200, 'its subscriptions go on');
is($api->post("$DEV/subscriptions", { apiproduct => 'maps', plan => 'maps-basic' })->{status}, 201,
   'another product still sells');
$r->apply_catalog(doc());
is($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-free' })->{status}, 201,
   'active again: it sells');

# --- a plan retired
like(apply_err(doc(sub { plan_of($_[0], 'weather-bronze')->{retired} = 'yes' })), qr/\.retired: must be true or false/,
     'retired: a boolean');
my $retired = doc(sub { plan_of($_[0], 'weather-bronze')->{retired} = JSON::PP::true });
$r->apply_catalog($retired);
problem_ok($api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' }), 409,
           qr/^plan weather-bronze is retired: not for sale$/, 'a retired plan cannot be bought');
is($api->call($s1->{primary})->{status}, 200, 'its subscriptions go on');
like(apply_err(doc()), qr/bad_request: plans\[1\]\.retired: plan weather-bronze is retired: retiring a plan is final/,
     'retiring is final');
is($r->cmd('HGET', 'apimon:plan:weather-bronze', 'retired'), '1', 'still retired');

# --- removal: refused while a subscription can be used or billed
my $no_bronze = doc(sub { $_[0]{plans} = [ grep { $_->{name} ne 'weather-bronze' } @{ $_[0]{plans} } ] });
like(apply_err($no_bronze), qr/conflict: plan weather-bronze is used by 1 subscription\(s\) that can still be used or billed/,
     'removing a plan with an active subscription: conflict');
my $base1 = "$DEV/subscriptions/$s1->{name}";
is($api->post("$base1:cancel")->{status}, 200, 'cancelled now');
like(apply_err($no_bronze), qr/conflict: plan weather-bronze is used by 1/, 'ended this month (still to be billed): conflict');
# a subscription of the plan that ended three months ago: it no longer holds the plan
$r->cmd('HSET', Apimon::Redis::sub_key($s1->{name}), 'startTime', month_start(5), 'endTime', month_start(3));
my $audit = $r->cmd('XLEN', 'apimon:audit');
is(apply_err($no_bronze), 'applied', 'ended before last month: the plan can go');
is($r->cmd('EXISTS', 'apimon:plan:weather-bronze'), 0, 'the plan is gone');
is($api->get($base1)->{json}{plan}, 'weather-bronze', 'the old subscription still names it');

# a product: the same rule through its plans
my $no_maps = doc(sub {
    $_[0]{products} = [ grep { $_->{name} ne 'maps' } @{ $_[0]{products} } ];
    $_[0]{plans} = [ grep { $_->{product} ne 'maps' && $_->{name} ne 'weather-bronze' } @{ $_[0]{plans} } ];
});
like(apply_err($no_maps), qr/conflict: plan maps-basic is used by 1/, 'removing a product in use: conflict');

# --- audited transitions
$r->apply_catalog(doc(sub {
    $_[0]{products}[1]{state} = 'inactive';
    $_[0]{plans} = [ grep { $_->{name} ne 'weather-bronze' } @{ $_[0]{plans} } ];
    plan_of($_[0], 'weather-free')->{retired} = JSON::PP::true;
}));
my %act = map { my %e = @{ $_->[1] }; ("$e{action} $e{target}" => \%e) } @{ $r->cmd('XRANGE', 'apimon:audit', '-', '+') };
ok($act{'product.deactivate weather'}, 'audited: product deactivated');
ok($act{'plan.retire weather-bronze'}, 'audited: plan retired');
ok($act{'plan.remove weather-bronze'}, 'audited: plan removed');
ok($act{'product.deactivate maps'}, 'audited: maps deactivated');
ok($act{'plan.retire weather-free'}, 'audited: weather-free retired');
is($act{'plan.retire weather-free'}{who}, 'catalog', 'the audit names who applied it');

# --- the billing agent, a month past the removed plan
SKIP: {
    skip 'billing-agent not built', 4 unless -x Apimon::Agent::agent_bin();
    # the agent applies a file with the lifecycle members and attributes
    my ($fh, $file) = File::Temp::tempfile(UNLINK => 1, SUFFIX => '.json');
    print $fh doc(sub {
        $_[0]{products}[1]{state} = 'inactive';
        $_[0]{products}[0]{attributes} = [ { name => 'tier', value => 'a' } ];
        $_[0]{plans} = [ grep { $_->{name} ne 'weather-bronze' } @{ $_[0]{plans} } ];
        plan_of($_[0], 'weather-free')->{retired} = JSON::PP::true;
        plan_of($_[0], 'weather-free')->{attributes} = [];
    });
    close $fh;
    my $ap = run_agent(env => agent_env($r, undef), args => [ 'catalog', 'apply', $file ]);
    is($ap->{rc}, 0, 'billing-agent catalog apply takes state, retired and attributes') or diag $ap->{err};
    is($api->get('/apiproducts/weather')->{json}{attributes}[0]{name}, 'tier', 'applied');
    my $stripe = Apimon::Stripe->start;
    my @t = gmtime(floor(month_start(1) / 1000));
    my $last = sprintf('%04d-%02d', $t[5] + 1900, $t[4] + 1);
    my $run = run_agent(env => agent_env($r, $stripe),
                        args => [ 'bill', '--period', $last, '--dry-run', '--boundary-margin', '0' ]);
    is($run->{rc}, 0, "billing $last with a removed plan's subscription: exit 0") or diag $run->{err};
    unlike($run->{err}, qr/not priced|not in the catalog/, 'nothing reported for it: it has no day in the month');
}
done_testing();
