#!/usr/bin/perl
# billing-agent catalog apply / show: validation with field-path messages
# before anything reaches Redis, the version bump, refusal to drop a plan in
# use, and the example catalog billed end to end.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent agent_env models_catalog make_calls ms);
use File::Temp qw(tempdir);
use JSON::PP;

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $env = agent_env($r, $stripe);
my $dir = tempdir(CLEANUP => 1);

sub file { my ($name, $text) = @_; open my $f, '>', "$dir/$name" or die; print $f $text; close $f; "$dir/$name" }

my $run = run_agent(env => $env, args => ['catalog', 'show']);
is($run->{rc}, 0, 'show with no catalog: exit 0');
like($run->{out}, qr/no catalog applied/, 'show with no catalog: says so');

$run = run_agent(env => $env, args => ['catalog', 'apply', 'schema/catalog.example.json']);
is($run->{rc}, 0, 'apply the example: exit 0') or diag $run->{err};
like($run->{out}, qr/applied: version 1 \(\d+ products, 7 plans\)/, 'apply: version 1');

$run = run_agent(env => $env, args => ['catalog', 'show']);
is($run->{rc}, 0, 'show: exit 0');
like($run->{out}, qr/^version: 1$/m, 'show: version');
like($run->{out}, qr/^plan weather-bronze: 0 subscriptions$/m, 'show: plans with subscription counts');
like($run->{out}, qr/"weather-gold"/, 'show: the document');
like($run->{out}, qr/^week start: monday$/m, 'show: the week start');
like($run->{out}, qr{^webhook https://ops\.example\.com/apimon/events \(secret file /etc/apimon/ops-hook\.secret\)$}m,
     'show: the top-level webhooks');
like($run->{out}, qr/^  quota plan-quota: 10000 per 1 month, blocking$/m, 'show: a quota rule');

# what this version's check does not enforce yet is refused by the agent,
# naming the field; nothing reaches Redis
my $ex = decode_json(do { local $/; open my $f, '<', 'schema/catalog.example.json' or die; <$f> });
my @later = (
    [ 'two rate rules', sub { $_[0]{rateLimit} = [ { limit => 1, per => 'second' }, { limit => 9, per => 'day' } ] },
      qr/plans\[\d\]\.rateLimit: more than one rate rule: not enforced by this version of apimon yet/ ],
    [ 'two quota rules', sub { $_[0]{quota} = [ { limit => 1, period => 'day' }, { limit => 9, period => 'month' } ] },
      qr/plans\[\d\]\.quota: more than one quota rule: not enforced/ ],
    [ 'an interval', sub { $_[0]{quota} = { limit => 1, period => 'month', interval => 2 } },
      qr/plans\[\d\]\.quota: a period of 2 month: not enforced/ ],
    [ 'a second quota', sub { $_[0]{quota} = { limit => 1, period => 'second' } },
      qr/plans\[\d\]\.quota: a period of 1 second: not enforced/ ],
    [ 'a soft quota', sub { $_[0]{quota} = { limit => 1, period => 'month', blockOnBreach => JSON::PP::false } },
      qr/plans\[\d\]\.quota\.blockOnBreach: a soft quota \(false\): not enforced/ ],
    [ 'notify', sub { $_[0]{quota} = { limit => 1, period => 'month', notify => [ 80 ] } },
      qr/plans\[\d\]\.quota\.notify: quota notifications: not enforced/ ],
    [ 'a quota message', sub { $_[0]{quota} = { limit => 1, period => 'month', violationMessage => 'no' } },
      qr/plans\[\d\]\.quota\.violationMessage: a violation message: not enforced/ ],
    [ 'a rate message', sub { $_[0]{rateLimit} = { limit => 1, per => 'second', violationMessage => 'no' } },
      qr/plans\[\d\]\.rateLimit\.violationMessage: a violation message: not enforced/ ],
    [ 'week start', sub { $_[0]{quota} = { limit => 1, period => 'week' }; 'sunday' },
      qr/weekStart: weeks not starting on monday with a week quota \(weather-bronze\): not enforced/ ],
);
for my $c (@later) {
    my ($what, $edit, $want) = @$c;
    my $doc = decode_json(encode_json($ex));
    my ($bronze) = grep { $_->{name} eq 'weather-bronze' } @{ $doc->{plans} };
    my $ws = $edit->($bronze);
    $doc->{weekStart} = $ws if defined $ws && !ref $ws && $ws =~ /day$/;
    my $later = run_agent(env => $env, args => ['catalog', 'apply', file('later.json', encode_json($doc))]);
    is($later->{rc}, 2, "not enforced yet, $what: exit 2");
    like($later->{err}, $want, "not enforced yet, $what: names the field");
}
is($r->cmd('HGET', 'apimon:catalog', 'version'), 1, 'refused forms: still version 1');

# rule lists stored by catalog_apply (t/18) are shown as they are
{
    my $r2 = Apimon::Redis->start;
    my $doc = decode_json(encode_json($ex));
    my ($gold) = grep { $_->{name} eq 'weather-gold' } @{ $doc->{plans} };
    $gold->{rateLimit} = [ { limit => 100, per => 'second' }, { name => 'gold-15min', limit => 50000, per => 'minute', interval => 15 } ];
    $gold->{quota} = { limit => 10000, period => 'month', notify => [ 80, 100 ], violationMessage => 'Gold includes 10,000' };
    $r2->apply_catalog(encode_json($doc));
    my $show = run_agent(env => agent_env($r2, $stripe), args => ['catalog', 'show']);
    like($show->{out}, qr/^  quota plan-quota: 10000 per 1 month, blocking, notify 80%,100% once, message "Gold/m,
         'show: a quota rule with its notify thresholds and message');
    like($show->{out}, qr/^  rate plan-rate: 100 per 1 second\n  rate gold-15min: 50000 per 15 minute$/m,
         'show: a list of rate rules with an interval');
}

# invalid documents: the message names the field; Redis is untouched
my $bad = decode_json(models_catalog());
$bad->{plans}[4]{pricing}{tiers}[1]{upTo} = 5;
$run = run_agent(env => $env, args => ['catalog', 'apply',
    file('bad.json', JSON::PP->new->encode($bad))]);
is($run->{rc}, 2, 'invalid tiers: exit 2');
like($run->{err}, qr/plans\[4\]\.pricing\.tiers\[1\]\.upTo/, 'invalid tiers: names the field');
$run = run_agent(env => $env, args => ['catalog', 'apply', file('broken.json', '{"products": [')]);
is($run->{rc}, 2, 'not JSON: exit 2');
like($run->{err}, qr/JSON/, 'not JSON: says so');
$run = run_agent(env => $env, args => ['catalog', 'apply', "$dir/missing.json"]);
is($run->{rc}, 2, 'missing file: exit 2');
is($r->cmd('HGET', 'apimon:catalog', 'version'), 1, 'still version 1');

# a plan in use cannot be removed
my $t0 = ms('2025-12-01');
$r->put_developer('dee@example.com', { firstName => 'Dee', lastName => 'D', userName => 'dee' }, now => $t0);
$r->set_customer('developer', 'dee@example.com', 'cus_dee', $t0);
my $ex = decode_json(do { local $/; open my $f, '<', 'schema/catalog.example.json'; <$f> });
my %plans = map { $_->{name} => $_ } @{ $ex->{plans} };
my %sub;
for my $p (sort keys %plans) {
    next if ($plans{$p}{approval} // 'auto') eq 'manual';
    $sub{$p} = $r->create_subscription(owner => 'dee@example.com', product => $plans{$p}{product},
        plan => $p, now => $t0, start => $t0);
}
my $less = { %$ex, plans => [ grep { $_->{name} ne 'weather-bronze' } @{ $ex->{plans} } ] };
$run = run_agent(env => $env, args => ['catalog', 'apply', file('less.json', JSON::PP->new->encode($less))]);
is($run->{rc}, 2, 'removing a plan in use: exit 2');
like($run->{err}, qr/conflict/, 'removing a plan in use: conflict');
is($r->cmd('HGET', 'apimon:catalog', 'version'), 1, 'still version 1');

# re-applying bumps the version, and the agent keys its lines with it
$run = run_agent(env => $env, args => ['catalog', 'apply', 'schema/catalog.example.json']);
like($run->{out}, qr/version 2/, 're-apply: version 2');
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--report', '-']);
is($run->{rc}, 0, 'the example catalog bills') or diag $run->{err};
ok(scalar($stripe->items) > 0, 'items posted');
ok(!grep({ $_->{metadata}{apimon_key} !~ /-v2$/ } $stripe->items), 'keys carry pricing version 2');

done_testing;
