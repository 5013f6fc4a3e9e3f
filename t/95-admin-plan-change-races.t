#!/usr/bin/perl
# :changePlan guarded as the other changes: a stale If-Match is 412 with
# nothing changed; changes sent at once with the same If-Match change the
# plan exactly once; Idempotency-Key replays the first answer (one change,
# one history entry, one audit entry), another body with the key is 422;
# changes sent at once without a guard all apply in some order, the history
# and the indexes agreeing with the final plan; a plan left recently holds
# in the catalog while its days can still be billed.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use POSIX ();
use Apimon::Redis;
use Apimon::Admin;

my $J = JSON::PP->new->canonical;
my @PLANS = map { { name => "geo-$_", product => 'geo', pricing => { model => 'free' } } } qw(a b c d e f g h i);
sub catalog {
    my (@plans) = @_;
    return $J->encode({ products => [ { name => 'geo', apis => ['forecast'] } ], plans => \@plans });
}
my $r = Apimon::Redis->start;
$r->apply_catalog(catalog(@PLANS, { name => 'geo-z', product => 'geo', pricing => { model => 'free' } }));
my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);
my $DEV = '/developers/ann@example.com';
is($api->post('/developers', { email => 'ann@example.com' })->{status}, 201, 'developer');

sub at_once {
    my ($count, $code) = @_;
    my @kids;
    for my $i (1 .. $count) {
        pipe(my $rd, my $wr) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            close $rd;
            my $c = Apimon::Admin->new(nginx => $n);
            print $wr JSON::PP->new->encode($code->($c, $i));
            close $wr;
            POSIX::_exit(0);
        }
        close $wr;
        push @kids, [ $pid, $rd ];
    }
    my @out;
    for my $k (@kids) {
        my $fh = $k->[1];
        local $/;
        my $text = <$fh>;
        waitpid $k->[0], 0;
        push @out, JSON::PP->new->decode($text || '{}');
    }
    return @out;
}
sub buy {
    my $res = $api->post("$DEV/subscriptions", { apiproduct => 'geo', plan => 'geo-a' });
    is($res->{status}, 201, 'purchase');
    return $res->{json};
}
sub path { "$DEV/subscriptions/$_[0]{name}:changePlan" }
sub audits {
    my ($id) = @_;
    return scalar grep { my %f = @{ $_->[1] }; $f{target} eq $id && $f{action} eq 'subscription.changePlan' }
        @{ $r->cmd('XRANGE', 'apimon:audit', '-', '+') };
}

# --- If-Match
my $s = buy();
my $key = "apimon:sub:{$s->{name}}";
my $etag = $api->get("$DEV/subscriptions/$s->{name}")->{headers}{etag};
is($api->put("$DEV/subscriptions/$s->{name}", { attributes => [ { name => 'x', value => '1' } ] })->{status}, 200,
   'another change: the ETag moves on');
my $res = $api->post(path($s), { plan => 'geo-b' }, headers => { 'If-Match' => $etag });
Apimon::Admin::problem_ok($res, 412, qr/If-Match: the subscription has changed \(its ETag is "\d+"\)/, 'stale If-Match');
is($api->get("$DEV/subscriptions/$s->{name}")->{json}{plan}, 'geo-a', 'stale If-Match: the plan unchanged');
ok(!$r->cmd('EXISTS', "$key:plans"), 'stale If-Match: no history');
is(audits($s->{name}), 0, 'stale If-Match: not audited');
$res = $api->post(path($s), { plan => 'geo-b', effective => 'periodEnd' }, headers => { 'If-Match' => $etag });
is($res->{status}, 412, 'stale If-Match, periodEnd: 412');
ok(!defined $r->cmd('HGET', $key, 'nextPlan'), 'stale If-Match, periodEnd: nothing pending');
$etag = $api->get("$DEV/subscriptions/$s->{name}")->{headers}{etag};
$res = $api->post(path($s), { plan => 'geo-b' }, headers => { 'If-Match' => $etag });
is($res->{status}, 200, 'the current ETag: 200');
is($res->{json}{plan}, 'geo-b', '... changed');
$res = $api->post(path($s), { plan => 'geo-c' }, headers => { 'If-Match' => '*' });
is($res->{status}, 200, 'If-Match *: 200');

# --- the same If-Match, eight at once to eight plans: one wins
$etag = $api->get("$DEV/subscriptions/$s->{name}")->{headers}{etag};
my @res = at_once(8, sub {
    my ($c, $i) = @_;
    my $plan = ('geo-a', 'geo-b', 'geo-d', 'geo-e', 'geo-f', 'geo-g', 'geo-h', 'geo-i')[$i - 1];
    my $res = $c->post(path($s), { plan => $plan }, headers => { 'If-Match' => $etag });
    return { status => $res->{status}, plan => $res->{json}{plan} // '' };
});
my @won = grep { $_->{status} == 200 } @res;
is(scalar @won, 1, 'the same If-Match at once: one change');
is(scalar(grep { $_->{status} == 412 } @res), 7, '... the seven others 412');
my $now = $api->get("$DEV/subscriptions/$s->{name}")->{json}{plan};
is($now, $won[0]{plan}, "... the winner's plan is the plan");
is(scalar @{ $r->cmd('LRANGE', "$key:plans", 0, -1) }, 4, '... one history entry more (a, b, c, the winner)');
is($r->cmd('SISMEMBER', "apimon:plan:$now:subs", $s->{name}), 1, '... indexed under it');

# --- Idempotency-Key: three retries, one change
my $i = buy();
my %K = (headers => { 'Idempotency-Key' => 'change-1' });
my $first = $api->post(path($i), { plan => 'geo-b' }, %K);
is($first->{status}, 200, 'with an Idempotency-Key: 200');
ok(!exists $first->{headers}{'idempotent-replayed'}, '... not a replay');
for my $try (1 .. 3) {
    $res = $api->post(path($i), { plan => 'geo-b' }, %K);
    is($res->{status}, 200, "retry $try: 200");
    is($res->{headers}{'idempotent-replayed'}, 'true', "retry $try: Idempotent-Replayed: true");
    is($res->{json}{plan}, 'geo-b', "retry $try: the first answer");
    is($res->{headers}{etag}, $first->{headers}{etag}, "retry $try: the same ETag");
    ok(!exists $res->{json}{primary}, "retry $try: no key");
}
is(scalar @{ $r->cmd('LRANGE', "apimon:sub:{$i->{name}}:plans", 0, -1) }, 2, 'one change in the history');
is(audits($i->{name}), 1, 'one audit entry');
# a retry after another change still replays the first answer, changing nothing
is($api->post(path($i), { plan => 'geo-c' })->{status}, 200, 'another change without the key');
$res = $api->post(path($i), { plan => 'geo-b' }, %K);
is($res->{json}{plan}, 'geo-b', 'the key again: the first answer');
is($api->get("$DEV/subscriptions/$i->{name}")->{json}{plan}, 'geo-c', '... and the plan stays geo-c');
Apimon::Admin::problem_ok($api->post(path($i), { plan => 'geo-d' }, %K), 422,
    qr/Idempotency-Key: already used by a request with another path or body/, 'the key with another body');
my $j = buy();
Apimon::Admin::problem_ok($api->post(path($j), { plan => 'geo-b' }, %K), 422,
    qr/another path/, 'the key on another subscription');
is($api->get("$DEV/subscriptions/$j->{name}")->{json}{plan}, 'geo-a', '... which is unchanged');

# the same key sent at once: one change
my $k = buy();
@res = at_once(6, sub {
    my ($c) = @_;
    my $res = $c->post(path($k), { plan => 'geo-e' }, headers => { 'Idempotency-Key' => 'change-at-once' });
    return { status => $res->{status}, plan => $res->{json}{plan} // '' };
});
is(scalar(grep { $_->{status} == 200 && $_->{plan} eq 'geo-e' } @res), 6, 'the same key at once: six answers 200');
is(scalar @{ $r->cmd('LRANGE', "apimon:sub:{$k->{name}}:plans", 0, -1) }, 2, '... one change');
is(audits($k->{name}), 1, '... one audit entry');

# --- no guard: eight changes at once all apply, one after the other
my $u = buy();
@res = at_once(8, sub {
    my ($c, $x) = @_;
    my $res = $c->post(path($u), { plan => ('geo-b', 'geo-c', 'geo-d', 'geo-e', 'geo-f', 'geo-g', 'geo-h', 'geo-i')[$x - 1] });
    return { status => $res->{status} };
});
is(scalar(grep { $_->{status} == 200 } @res), 8, 'unguarded at once: eight 200');
my @h = @{ $r->cmd('LRANGE', "apimon:sub:{$u->{name}}:plans", 0, -1) };
is(scalar @h, 9, '... nine history entries');
my $last = (split /\|/, $h[-1])[2];
is($api->get("$DEV/subscriptions/$u->{name}")->{json}{plan}, $last, '... the last entry is the plan');
my @in = grep { $r->cmd('SISMEMBER', "apimon:plan:$_->{name}:subs", $u->{name}) } @PLANS;
is_deeply([ map { $_->{name} } @in ], [ $last ], '... indexed under that plan only');
is(audits($u->{name}), 8, '... eight audit entries');

# --- the catalog: a plan left this month still holds, while its days can be billed
my $z = $api->post("$DEV/subscriptions", { apiproduct => 'geo', plan => 'geo-z' })->{json};
is($api->post(path($z), { plan => 'geo-b' })->{status}, 200, 'geo-z left for geo-b');
is($r->cmd('SCARD', 'apimon:plan:geo-z:subs'), 0, 'no subscription on geo-z');
my $v = $r->try_script('catalog_apply', [], [ catalog(@PLANS), 0 ]);
ok(Apimon::Redis::is_error($v), 'removing geo-z, left this month: refused');
like(Apimon::Redis::is_error($v) ? $v->message : '', qr/plan geo-z is used by 1 subscription\(s\) that can still be used or billed/,
     '... says why');
is($r->cmd('HGET', 'apimon:plan:geo-z', 'product'), 'geo', '... and geo-z is kept');
# left three months ago: its days are billed, it may go
$r->cmd('ZADD', 'apimon:plan:geo-z:former', time * 1000 - 100 * 86400000, $z->{name});
$v = $r->try_script('catalog_apply', [], [ catalog(@PLANS), 0 ]);
ok(!Apimon::Redis::is_error($v), 'left long ago: removed') or diag $v->message;
ok(!$r->cmd('EXISTS', 'apimon:plan:geo-z:former'), '... with its :former');

done_testing;
