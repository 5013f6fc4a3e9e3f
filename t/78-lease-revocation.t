#!/usr/bin/perl
# Lease mode: a suspension, a cancellation and a key regeneration take
# effect within one lease time (time=, default 1s): a lease carved before
# them is never used after it expired, and the next carve sees the change.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $loc = "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://backend; }\n";

my $n = Apimon::Nginx->new(workers => 2);
$n->start(redis => $r, http => 'apimon_lease 1m;', server => $loc);
my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 10);

sub call { $http->get($n->url('/x/a'), { headers => { 'X-API-Key' => $_[0] } })->{status} }

# calls every 20 ms (a lease of 64 calls outlasts its time then) until the
# first refusal; the seconds from $t0 to it, and its status
sub until_refused {
    my ($key, $t0) = @_;
    my $deadline = $t0 + 5;
    while (time < $deadline) {
        my $st = call($key);
        return (time - $t0, $st) if $st != 200;
        sleep 0.02;
    }
    return (undef, 200);
}

for my $case ([ 'suspend', 403 ], [ 'cancel', 403 ]) {
    my ($action, $want) = @$case;
    my $s = Apimon::Nginx::subscribe($r, 'open');
    call($s->{primary}) for 1 .. 5;     # a lease is held now
    my $from = () = $n->error_log =~ /apimon: served from a lease/g;
    cmp_ok($from, '>', 0, "$action: calls served from a lease before");
    my $t0 = time;
    $r->set_state($s->{id}, $action);
    my ($secs, $st) = until_refused($s->{primary}, $t0);
    ok(defined $secs, "$action: refused at last");
    is($st, $want, "$action: with $want");
    # one lease time (1 s) and one flush (100 ms); the rest is the machine
    cmp_ok($secs // 99, '<=', 1.1 + 1.5, sprintf("$action: within one lease time (%.2f s)", $secs // -1));
    is(call($s->{primary}), $want, "$action: and refused from then on");
}

{
    my $s = Apimon::Nginx::subscribe($r, 'open');
    call($s->{primary}) for 1 .. 5;
    my $t0 = time;
    my $new = $r->set_key($s->{id}, 'primary');
    my ($secs, $st) = until_refused($s->{primary}, $t0);
    is($st, 401, 'key regenerated: the old key refused with 401');
    cmp_ok($secs // 99, '<=', 1.1 + 1.5, sprintf('key regenerated: within one lease time (%.2f s)', $secs // -1));
    is(call($new), 200, 'key regenerated: the new key served');
}

# a shorter lease time, a shorter delay
{
    $n->reload(redis => $r, http => 'apimon_lease 1m time=200ms flush=50ms;', server => $loc);
    my $s = Apimon::Nginx::subscribe($r, 'open');
    call($s->{primary}) for 1 .. 5;
    my $t0 = time;
    $r->set_state($s->{id}, 'suspend');
    my ($secs, $st) = until_refused($s->{primary}, $t0);
    is($st, 403, 'time=200ms: suspended, refused');
    cmp_ok($secs // 99, '<=', 0.25 + 1.5, sprintf('time=200ms: within one lease time (%.2f s)', $secs // -1));
}

$n->stop;
done_testing;
