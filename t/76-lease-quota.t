#!/usr/bin/perl
# Lease mode: a quota of Q serves exactly Q calls over 2 nginx instances
# (2 workers each) and parallel clients; once the leases are returned
# (within one lease time and a flush), Redis counts exactly the calls served
# and the calls refused; the rate limit of a plan holds within its bound.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX ();
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use Apimon::Redis;
use Apimon::Nginx;

my $Q = 150;
my $r = Apimon::Redis->start;
$r->apply_catalog(<<"JSON");
{
  "products": [ { "name": "weather", "displayName": "Weather", "apis": ["forecast"] } ],
  "plans": [
    { "name": "q", "product": "weather", "quota": { "limit": $Q, "period": "day" },
      "pricing": { "model": "free" } },
    { "name": "open", "product": "weather", "pricing": { "model": "free" } }
  ]
}
JSON

my $loc = "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://backend; }\n";
my @n = map { Apimon::Nginx->new(workers => 2) } 1 .. 2;
$_->start(redis => $r, http => 'apimon_lease 1m calls=16 time=500ms;', server => $loc) for @n;
my $secret = $n[0]->key_secret;
# both instances take the same keys: one key secret
$n[1]->stop;
$n[1]->start(redis => $r, http => 'apimon_lease 1m calls=16 time=500ms;', server => $loc,
             key_secret => $secret);

sub usage {
    my ($s) = @_;
    my $day = POSIX::strftime('%Y%m%d', gmtime);
    my %h = @{ $r->cmd('HGETALL', "apimon:sub:{$s->{id}}:usage:" . substr($day, 0, 6)) || [] };
    my %u;
    for my $f (keys %h) {
        my (undef, undef, $reason) = split /\|/, $f;
        $u{$reason} += $h{$f};
    }
    return \%u;
}

# $clients processes, each $each calls alternating between the instances;
# returns the count of each status
sub storm {
    my ($key, $clients, $each, $path) = @_;
    my @pipes;
    for my $c (1 .. $clients) {
        pipe(my $rd, my $wr) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            close $rd;
            my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 10);
            my %st;
            for my $i (1 .. $each) {
                my $res = $http->get($n[($c + $i) % 2]->url($path // '/x/a'), { headers => { 'X-API-Key' => $key } });
                $st{ $res->{status} }++;
            }
            print $wr join(' ', %st), "\n";
            close $wr;
            POSIX::_exit(0);
        }
        close $wr;
        push @pipes, [ $pid, $rd ];
    }
    my %all;
    for my $p (@pipes) {
        my $line = readline($p->[1]) // '';
        my %st = split ' ', $line;
        $all{$_} += $st{$_} for keys %st;
        waitpid($p->[0], 0);
    }
    return \%all;
}

# returned: nothing leased is left over in Redis's counts
sub settled {
    my ($s, $want_ok) = @_;
    my $deadline = time + 5;
    my $u;
    while (time < $deadline) {
        $u = usage($s);
        last if ($u->{ok} // 0) == $want_ok;
        sleep 0.1;
    }
    return $u;
}

{
    my $s = Apimon::Nginx::subscribe($r, 'q');
    my $st = storm($s->{primary}, 8, 40);
    is($st->{200}, $Q, "quota $Q over 2 instances and 8 clients: exactly $Q served");
    is(($st->{200} // 0) + ($st->{403} // 0), 320, 'every other call refused with 403 (quota_exceeded)');
    my $u = settled($s, $Q);
    is($u->{ok}, $Q, 'the leases returned: usage counts exactly the calls served');
    is($u->{quota_exceeded} // 0, $st->{403}, 'and exactly the calls refused');
}

{
    my $s = Apimon::Nginx::subscribe($r, 'open');
    my $st = storm($s->{primary}, 6, 50);
    is($st->{200}, 300, 'no limit: every call served');
    my $u = settled($s, 300);
    is($u->{ok}, 300, 'usage equals the calls served');
    is(scalar(keys %$u), 1, 'nothing else counted');
    my $local = 0;
    $local += () = $_->error_log =~ /apimon: served from a lease/g for @n;
    cmp_ok($local, '>=', 100, "calls decided from leases, not by Redis ($local of 450)");
}

# a location rate limit of 20 calls per second over both instances: in
# D seconds at most n * (D + T) / w + n calls pass (T the lease time, the
# leases outstanding; README), and Redis counts what was served
{
    my $rl = "        location /r/ { apimon on; apimon_api forecast; apimon_rate 20r/s; proxy_pass http://backend; }\n";
    $_->reload(redis => $r, http => 'apimon_lease 1m calls=16 time=500ms;', server => $rl,
               key_secret => $secret) for @n;
    my $s = Apimon::Nginx::subscribe($r, 'open');
    my $t0 = time;
    my $st = storm($s->{primary}, 4, 60, '/r/a');
    my $d = time - $t0;
    my $bound = 20 * ($d + 0.5) + 20;
    cmp_ok($st->{200}, '<=', $bound, sprintf('rate 20r/s: %d served in %.2f s, at most %d', $st->{200}, $d, $bound));
    cmp_ok($st->{200}, '>=', 20, 'rate 20r/s: at least the burst served');
    is(($st->{200} // 0) + ($st->{429} // 0), 240, 'rate 20r/s: the others refused with 429');
    my $u = settled($s, $st->{200});
    is($u->{ok}, $st->{200}, 'rate 20r/s: usage counts exactly the calls served');
    is($u->{rate_limited} // 0, $st->{429}, 'rate 20r/s: and the calls refused');
}

$_->stop for @n;
is_deeply([ map { $_->alerts } @n ], [], 'no alerts');

done_testing;
