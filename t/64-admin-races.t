#!/usr/bin/perl
# Conditional requests and safe retries under concurrency: requests sent at
# the same time with the same If-Match change the resource exactly once (the
# others 412), and purchases sent at the same time with the same
# Idempotency-Key make exactly one subscription, every answer carrying its
# keys.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use POSIX ();
use Apimon::Redis;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Redis::catalog_fixture());
my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);
my $DEV = '/developers/ann@example.com';
is($api->post('/developers', { email => 'ann@example.com' })->{status}, 201, 'developer');

# runs $n copies of $code at once (one process each); their results, as JSON
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

# --- the same If-Match, eight writers: one wins
my $etag = $api->get($DEV)->{headers}{etag};
my @res = at_once(8, sub {
    my ($c, $i) = @_;
    my $res = $c->put($DEV, { firstName => "writer$i" }, headers => { 'If-Match' => $etag });
    return { status => $res->{status}, name => $res->{json}{firstName} // '' };
});
my @won = grep { $_->{status} == 200 } @res;
is(scalar @won, 1, 'one PUT with the shared If-Match succeeded');
is(scalar(grep { $_->{status} == 412 } @res), 7, 'the seven others: 412');
is($api->get($DEV)->{json}{firstName}, $won[0]{name}, 'the stored record is the winner\'s');

# --- the same action with the same If-Match: one transition, one audit entry
my $s = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' })->{json};
my $base = "$DEV/subscriptions/$s->{name}";
$etag = $api->get($base)->{headers}{etag};
my $audit = $r->cmd('XLEN', 'apimon:audit');
@res = at_once(6, sub {
    my ($c) = @_;
    return { status => $c->post("$base:suspend", undef, headers => { 'If-Match' => $etag })->{status} };
});
is(scalar(grep { $_->{status} == 200 } @res), 1, 'one :suspend succeeded');
is(scalar(grep { $_->{status} == 412 } @res), 5, 'the others: 412');
is($r->cmd('XLEN', 'apimon:audit'), $audit + 1, 'one audit entry');

# --- the same Idempotency-Key, eight purchases at once: one subscription
my $subs = $r->cmd('SCARD', 'apimon:subs');
@res = at_once(8, sub {
    my ($c) = @_;
    my $res = $c->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-free' },
                       headers => { 'Idempotency-Key' => 'burst-1' });
    return { status => $res->{status}, name => $res->{json}{name} // '', primary => $res->{json}{primary} // '',
             replayed => $res->{headers}{'idempotent-replayed'} // '' };
});
is(scalar(grep { $_->{status} == 201 } @res), 8, 'every purchase answered 201');
is($r->cmd('SCARD', 'apimon:subs'), $subs + 1, 'one subscription made');
my %names = map { $_->{name} => 1 } @res;
is(scalar keys %names, 1, 'every answer names it');
my %keys = map { $_->{primary} => 1 } @res;
is(scalar keys %keys, 1, 'every answer carries the same key');
is(scalar(grep { $_->{replayed} eq 'true' } @res), 7, 'seven of them replayed');
is($api->call((keys %keys)[0])->{status}, 200, 'the key serves');
done_testing();
