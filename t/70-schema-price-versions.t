#!/usr/bin/perl
# catalog_apply's price versions (apimon:plan:<name>:prices) and
# subscription_state's suspension intervals, at the script level: a plan
# from before versions keeps its old price since ever, versions from the
# effective time on are replaced, the plan hash holds the price in force at
# the apply, a removed plan loses its versions; suspendedAt / suspensions
# through every way out of suspended.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Apimon::Redis;

my $r = Apimon::Redis->start;
my $J = JSON::PP->new->canonical;
sub ms { Apimon::Redis::ms_utc(@_) }
sub doc {
    my (%fee) = @_;
    return $J->encode({ products => [ { name => 'geo', apis => ['a'] } ],
        plans => [ map { { name => $_, product => 'geo',
            pricing => { model => 'flat', currency => 'usd', amount => $fee{$_} } } } sort keys %fee ] });
}
sub apply { my ($d, $now, $eff) = @_; $r->try_script('catalog_apply', [], [ $d, $now, '', $eff // '' ]) }
sub versions {
    my %v = @{ $r->cmd('ZRANGE', "apimon:plan:$_[0]:prices", 0, -1, 'WITHSCORES') };
    return join ' ', map { "$v{$_}=" . $J->decode((split /\|/, $_, 2)[1])->{amount} }
        sort { $v{$a} <=> $v{$b} } keys %v;
}
sub hash_amount { $J->decode($r->cmd('HGET', "apimon:plan:$_[0]", 'pricing'))->{amount} }

my $t1 = ms('2026-10-01');
my $t2 = ms('2026-11-16');
my $t3 = ms('2027-01-01');

# a catalog applied by a schema without versions: the hash only
is(apply(doc(p => 1000), $t1), 1, 'apply');
$r->cmd('DEL', 'apimon:plan:p:prices');
is(apply(doc(p => 2000), $t1 + 1000, $t2), 2, 'apply effective later');
is(versions('p'), "0=1000 $t2=2000", 'the old price is seeded since ever, the new one from its time');
is(hash_amount('p'), 1000, 'the hash: the price in force at the apply');

# the same price again adds nothing; an earlier effective replaces later ones
is(apply(doc(p => 2000), $t1 + 2000, $t2), 3, 'same price, same time');
is(versions('p'), "0=1000 $t2=2000", '... no new version');
is(apply(doc(p => 3000), $t1 + 3000, $t3), 4, 'a third price later still');
is(versions('p'), "0=1000 $t2=2000 $t3=3000", 'three versions');
is(apply(doc(p => 2500), $t1 + 4000, $t2), 5, 'a fourth from the 16th');
is(versions('p'), "0=1000 $t2=2500", 'what was from the 16th on is replaced');
is(apply(doc(p => 1000), $t1 + 5000, $t2), 6, 'back to the old price from the 16th');
is(versions('p'), '0=1000', '... equal to the version before: no version');

# effective now (no ARGV 4): the hash shows the new price
is(apply(doc(p => 1200), $t2 + 1000), 7, 'apply now');
is(versions('p'), '0=1000 ' . ($t2 + 1000) . '=1200', 'now is the effective time');
is(hash_amount('p'), 1200, 'the hash: the new price');

# a new plan: its first price is in force since ever, whatever the date
is(apply(doc(p => 1200, q => 500), $t2 + 2000, $t3), 8, 'a new plan, effective later');
is(versions('q'), "0=500", 'a new plan: since ever');

# a removed plan loses its versions
is(apply(doc(p => 1200), $t2 + 3000), 9, 'plan q removed');
is($r->cmd('EXISTS', 'apimon:plan:q:prices'), 0, 'its versions are gone');

# a bad effective time is refused, nothing written
for my $bad ('soon', '-5', '1.5', '5') {
    my $v = apply(doc(p => 9999), $t2 + 4000, $bad);
    like("$v", qr/bad_request.*effective: must be milliseconds/, "effective '$bad': refused");
}
is(hash_amount('p'), 1200, 'refused applies wrote nothing');

# suspensions
$r->put_developer('ann@example.com', { firstName => 'A', lastName => 'A', userName => 'a' }, now => $t1);
my %s = map { $_ => $r->create_subscription(owner => 'ann@example.com', product => 'geo', plan => 'p',
    now => $t1, start => $t1) } qw(resume cancel expire same);
sub field { $r->cmd('HGET', Apimon::Redis::sub_key($s{$_[0]}{id}), $_[1]) }
for my $k (sort keys %s) { $r->set_state($s{$k}{id}, 'suspend', now => ms('2026-10-05')) }
is(field('resume', 'suspendedAt'), ms('2026-10-05'), 'suspend: suspendedAt');
is(field('resume', 'suspensions'), undef, 'suspend: no closed suspension yet');
$r->set_state($s{resume}{id}, 'resume', now => ms('2026-10-07'));
$r->set_state($s{cancel}{id}, 'cancel', now => ms('2026-10-08'));
$r->set_state($s{expire}{id}, 'expire', now => ms('2026-10-09'));
$r->set_state($s{same}{id}, 'resume', now => ms('2026-10-05'));
is(field('resume', 'suspensions'), ms('2026-10-05') . '-' . ms('2026-10-07'), 'resume closes it');
is(field('cancel', 'suspensions'), ms('2026-10-05') . '-' . ms('2026-10-08'), 'cancel closes it');
is(field('expire', 'suspensions'), ms('2026-10-05') . '-' . ms('2026-10-09'), 'expire closes it');
is(field('same', 'suspensions'), undef, 'resumed at the same ms: no empty interval');
is(field($_, 'suspendedAt'), undef, "$_: suspendedAt cleared") for sort keys %s;
$r->set_state($s{resume}{id}, 'suspend', now => ms('2026-10-20'));
$r->set_state($s{resume}{id}, 'resume', now => ms('2026-10-21'));
is(field('resume', 'suspensions'), join(',', ms('2026-10-05') . '-' . ms('2026-10-07'),
    ms('2026-10-20') . '-' . ms('2026-10-21')), 'a second suspension is appended');
my $view = $J->decode($r->run_script('subscription_view', [ Apimon::Redis::sub_key($s{resume}{id}) ],
    [ 0, '', '', '', '' ]));
ok(exists $view->{suspensions}, 'the script view shows them');

done_testing;
