#!/usr/bin/perl
# catalog_apply and the rule forms: one rule object or a list, intervals,
# quota fields, weekStart and webhooks stored in apimon:plan:<name>:rules and
# apimon:catalog:settings; what is invalid is refused naming the field and
# writes nothing; the subscription's mirrored limits stay today's.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Apimon::Redis;

my $r = Apimon::Redis->start;
my $J = JSON::PP->new->canonical;
sub doc { $J->encode($_[0]) }
sub clone { $J->decode($J->encode($_[0])) }
sub err { my $v = $r->try_script('catalog_apply', [], [ doc($_[0]), 0 ]); Apimon::Redis::is_error($v) ? "$v" : "no error: $v" }
sub rules { my %h = @{ $r->cmd('HGETALL', "apimon:plan:$_[0]:rules") }; $_ = $J->decode($_) for values %h; \%h }

my $free = { model => 'free' };
my $cat = {
    weekStart => 'sunday',
    webhooks => [ { url => 'https://ops.example/hooks/apimon', secretFile => '/etc/apimon/hook.secret' } ],
    products => [ { name => 'p', apis => [ 'a' ] } ],
    plans => [
        { name => 'old', product => 'p', rateLimit => { limit => 5, per => 'second' },
          quota => { limit => 1000, period => 'month' }, pricing => $free },
        { name => 'new', product => 'p', pricing => $free,
          rateLimit => [ { limit => 100, per => 'minute', interval => 15 }, { name => 'daily', limit => 5000, per => 'day' } ],
          quota => [ { name => 'fortnight', limit => 1000, period => 'week', interval => 2, blockOnBreach => JSON::PP::false,
                       notify => [ 50, 80, 100 ], frequency => 'every', violationMessage => 'Upgrade to Gold' },
                     { limit => 20, period => 'second' } ],
          webhooks => [ { url => 'http://127.0.0.1:9/x', secretFile => '/s' } ] },
        { name => 'bare', product => 'p', pricing => $free },
    ],
};
is($r->apply_catalog(doc($cat)), 1, 'a catalog with rule lists applies');
my %set = @{ $r->cmd('HGETALL', 'apimon:catalog:settings') };
is_deeply({ %set, webhooks => $J->decode($set{webhooks}) },
          { weekStart => 'sunday', webhooks => $cat->{webhooks} }, 'apimon:catalog:settings: weekStart, webhooks');
my %old = @{ $r->cmd('HGETALL', 'apimon:plan:old') };
is_deeply([ @old{qw(rate_n rate_w quota_n quota_unit)} ], [ 5, 1, 1000, 'month' ], 'one rule object: plan hash as before');
ok(!exists $old{rules} && !exists $old{rate}, 'no new fields in the plan hash');
is_deeply(rules('old'), {
    rate => [ { name => 'plan-rate', limit => 5, per => 'second', interval => 1, window => 1, violationMessage => '' } ],
    quota => [ { name => 'plan-quota', limit => 1000, period => 'month', interval => 1, blockOnBreach => JSON::PP::true,
                 notify => [], frequency => 'once', violationMessage => '' } ],
    webhooks => [] }, 'one rule object: a list of one, defaults filled in');
is_deeply(rules('new'), {
    rate => [ { name => 'plan-rate', limit => 100, per => 'minute', interval => 15, window => 900, violationMessage => '' },
              { name => 'daily', limit => 5000, per => 'day', interval => 1, window => 86400, violationMessage => '' } ],
    quota => [ { name => 'fortnight', limit => 1000, period => 'week', interval => 2, blockOnBreach => JSON::PP::false,
                 notify => [ 50, 80, 100 ], frequency => 'every', violationMessage => 'Upgrade to Gold' },
               { name => 'plan-quota-2', limit => 20, period => 'second', interval => 1, blockOnBreach => JSON::PP::true,
                 notify => [], frequency => 'once', violationMessage => '' } ],
    webhooks => [ { url => 'http://127.0.0.1:9/x', secretFile => '/s' } ] }, 'lists normalized');
is_deeply($r->cmd('HMGET', 'apimon:plan:new', qw(rate_n rate_w quota_n quota_unit)), [ 100, 900, 0, '' ],
          'mirrored: the first rate rule (100 per 900 s); a 2-week quota is not mirrored');
is_deeply(rules('bare'), { rate => [], quota => [], webhooks => [] }, 'no rules: empty lists');

# the subscription's pol as today
$r->put_developer('dev@example.com', {});
my $s = $r->create_subscription(owner => 'dev@example.com', product => 'p', plan => 'new');
is_deeply($r->cmd('HMGET', $s->{key}, qw(rate_n rate_w quota_n quota_unit)), [ 100, 900, 0, '' ], 'subscription mirrors the same');

# refusals name the field and write nothing
my @cases = (
    [ 'week start', sub { $_[0]{weekStart} = 'sun' }, qr/weekStart: must be a day of the week/ ],
    [ 'webhooks object', sub { $_[0]{webhooks} = 5 }, qr/^ERR apimon bad_request: webhooks: must be an array/ ],
    [ 'webhook url', sub { $_[0]{webhooks}[0]{url} = 'ftp://x' }, qr/webhooks\[0\]\.url: must be an http/ ],
    [ 'webhook secret', sub { $_[0]{webhooks}[0]{secretFile} = 'rel' }, qr/webhooks\[0\]\.secretFile: must be an absolute path/ ],
    [ 'webhook field', sub { $_[0]{webhooks}[0]{secret} = 'x' }, qr/webhooks\[0\]\.secret: unknown field/ ],
    [ 'plan webhook', sub { $_[0]{plans}[1]{webhooks}[0]{url} = 'http://a b' }, qr/plans\[1\]\.webhooks\[0\]\.url/ ],
    [ 'rate per', sub { $_[0]{plans}[1]{rateLimit}[1]{per} = 'week' }, qr/plans\[1\]\.rateLimit\[1\]\.per: must be second, minute, hour or day/ ],
    [ 'interval 0', sub { $_[0]{plans}[1]{rateLimit}[0]{interval} = 0 }, qr/plans\[1\]\.rateLimit\[0\]\.interval: must be an integer from 1 to 1000/ ],
    [ 'interval big', sub { $_[0]{plans}[0]{quota}{interval} = 1001 }, qr/plans\[0\]\.quota\.interval: must be an integer from 1 to 1000/ ],
    [ 'rate blockOnBreach', sub { $_[0]{plans}[0]{rateLimit}{blockOnBreach} = JSON::PP::false }, qr/plans\[0\]\.rateLimit\.blockOnBreach: not used by rate rules/ ],
    [ 'quota per', sub { $_[0]{plans}[0]{quota}{per} = 'day' }, qr/plans\[0\]\.quota\.per: not used by quota rules/ ],
    [ 'unknown', sub { $_[0]{plans}[0]{quota}{burst} = 1 }, qr/plans\[0\]\.quota\.burst: unknown field/ ],
    [ 'block type', sub { $_[0]{plans}[1]{quota}[0]{blockOnBreach} = 'no' }, qr/plans\[1\]\.quota\[0\]\.blockOnBreach: must be true or false/ ],
    [ 'frequency', sub { $_[0]{plans}[1]{quota}[0]{frequency} = 'always' }, qr/plans\[1\]\.quota\[0\]\.frequency: must be once or every/ ],
    [ 'notify order', sub { $_[0]{plans}[1]{quota}[0]{notify} = [ 80, 50 ] }, qr/plans\[1\]\.quota\[0\]\.notify\[1\]: thresholds must be ascending/ ],
    [ 'notify range', sub { $_[0]{plans}[1]{quota}[0]{notify} = [ 0 ] }, qr/plans\[1\]\.quota\[0\]\.notify\[0\]: must be an integer percentage/ ],
    [ 'notify type', sub { $_[0]{plans}[1]{quota}[0]{notify} = 80 }, qr/plans\[1\]\.quota\[0\]\.notify: must be an array/ ],
    [ 'duplicate name', sub { $_[0]{plans}[1]{quota}[1]{name} = 'daily' }, qr/plans\[1\]\.quota\[1\]\.name: duplicate rule name daily/ ],
    [ 'bad name', sub { $_[0]{plans}[1]{quota}[1]{name} = 'a b' }, qr/plans\[1\]\.quota\[1\]\.name: must match/ ],
    [ 'message', sub { $_[0]{plans}[1]{quota}[0]{violationMessage} = 'x' x 257 }, qr/plans\[1\]\.quota\[0\]\.violationMessage: must be a string of at most 256 bytes/ ],
    [ 'too many', sub { $_[0]{plans}[1]{rateLimit} = [ map { { limit => 1, per => 'second', name => "r$_" } } 1 .. 9 ] }, qr/plans\[1\]\.rateLimit: at most 8 rules/ ],
    [ 'rule not object', sub { $_[0]{plans}[1]{rateLimit} = [ 5 ] }, qr/plans\[1\]\.rateLimit\[0\]: must be an object/ ],
    [ 'rules scalar', sub { $_[0]{plans}[1]{quota} = 'lots' }, qr/plans\[1\]\.quota: must be an object or an array of them/ ],
);
my $json = $r->cmd('HGET', 'apimon:catalog', 'json');
my $settings = $r->cmd('HGETALL', 'apimon:catalog:settings');
my $new_rules = rules('new');
for my $c (@cases) {
    my ($name, $mut, $re) = @$c;
    my $x = clone($cat);
    $mut->($x);
    my $e = err($x);
    like($e, qr/^ERR apimon bad_request: /, "$name: bad_request");
    like($e, $re, "$name: names the field");
}
is($r->cmd('HGET', 'apimon:catalog', 'version'), 1, 'refused documents bump nothing');
is($r->cmd('HGET', 'apimon:catalog', 'json'), $json, '...replace nothing');
is_deeply($r->cmd('HGETALL', 'apimon:catalog:settings'), $settings, '...keep the settings');
is_deeply(rules('new'), $new_rules, '...and the rules');

# a plan removed takes its rules along; weekStart defaults to monday
my $less = clone($cat);
$less->{plans} = [ grep { $_->{name} ne 'bare' } @{ $less->{plans} } ];
delete $less->{weekStart};
delete $less->{webhooks};
is($r->apply_catalog(doc($less)), 2, 'apply without bare, weekStart, webhooks');
is($r->cmd('EXISTS', 'apimon:plan:bare:rules'), 0, 'the removed plan\'s rules are gone');
is_deeply({ @{ $r->cmd('HGETALL', 'apimon:catalog:settings') } }, { weekStart => 'monday', webhooks => '[]' },
          'defaults: monday, no webhooks');

done_testing;
