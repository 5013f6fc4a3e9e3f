#!/usr/bin/perl
# Enforcement: location limits (apimon_rate, apimon_quota) on top of the plan's,
# the $apimon_*_remaining variables, and exactly Q calls served under a
# quota of Q with many parallel clients.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX ();
use HTTP::Tiny;
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());

my $n = Apimon::Nginx->new(workers => 2);
$n->start(redis => $r, server => <<'CONF');
        apimon_api forecast;
        add_header X-Quota-Remaining $apimon_quota_remaining always;
        add_header X-Rate-Remaining $apimon_rate_remaining always;
        add_header X-Subscription $apimon_subscription always;
        add_header X-Result $apimon_result always;

        location /rate/ {
            apimon on;
            apimon_rate 3r/m;
            proxy_pass http://backend;

            location /rate/off/ {
                apimon on;
                apimon_api history;
                apimon_rate off;
                proxy_pass http://backend;
            }
        }

        location /quota/ {
            apimon on;
            apimon_api history;
            apimon_quota 2 hour;
            proxy_pass http://backend;
        }

        location /both/ {
            apimon on;
            apimon_api tiles;
            apimon_rate 100r/s;
            apimon_quota 4 week;
            proxy_pass http://backend;
        }

        location /many/ {
            apimon on;
            apimon_quota 50 day;
            proxy_pass http://backend;
        }
CONF

sub sf {
    my ($v) = @_;
    my %out;
    for my $item (split /,\s*/, $v // '') {
        my ($name, @params) = split /;/, $item;
        $name =~ s/^"(.*)"$/$1/;
        $out{$name} = { map { split /=/, $_, 2 } @params };
    }
    return \%out;
}

# --- apimon_rate 3r/m on an unlimited plan
my $s = Apimon::Nginx::subscribe($r, 'open');
my $res;
for my $i (1 .. 3) {
    $res = $n->get('/rate/x', 'X-API-Key' => $s->{primary});
    is($res->{status}, 200, "loc rate: call $i");
}
is_deeply(sf($res->{headers}{'ratelimit-policy'}), { 'loc-rate' => { q => 3, w => 60 } },
          'RateLimit-Policy "loc-rate";q=3;w=60');
is(sf($res->{headers}{ratelimit})->{'loc-rate'}{r}, 0, 'RateLimit r=0 after the third');
is($res->{headers}{'x-rate-remaining'}, 0, '$apimon_rate_remaining');
is($res->{headers}{'x-quota-remaining'}, undef, '$apimon_quota_remaining: empty without a quota (no header)');
is($res->{headers}{'x-subscription'}, $s->{id}, '$apimon_subscription');
is($res->{headers}{'x-result'}, 'allowed', '$apimon_result');
$res = $n->get('/rate/x', 'X-API-Key' => $s->{primary});
is($res->{status}, 429, 'loc rate: the fourth call within a minute is 429');
ok($res->{headers}{'retry-after'} >= 1 && $res->{headers}{'retry-after'} <= 20, 'loc rate: Retry-After (one call every 20 s)');
is($res->{headers}{'x-result'}, 'rate_limited', '$apimon_result on a refusal');

# a nested location switches the location rate off
is($n->get('/rate/off/x', 'X-API-Key' => $s->{primary})->{status}, 200, 'apimon_rate off: 200');
$res = $n->get('/rate/off/x', 'X-API-Key' => $s->{primary});
is($res->{headers}{'ratelimit-policy'}, undef, 'apimon_rate off: no window, no RateLimit-Policy');

# --- apimon_quota 2 hour
my $t = Apimon::Nginx::subscribe($r, 'open');
is($n->get('/quota/x', 'X-API-Key' => $t->{primary})->{status}, 200, 'loc quota: 1');
$res = $n->get('/quota/x', 'X-API-Key' => $t->{primary});
is($res->{status}, 200, 'loc quota: 2');
is($res->{headers}{'x-quota-remaining'}, 0, '$apimon_quota_remaining');
is_deeply(sf($res->{headers}{'ratelimit-policy'}), { 'loc-quota' => { q => 2, w => 3600 } },
          'RateLimit-Policy "loc-quota";q=2;w=3600');
$res = $n->get('/quota/x', 'X-API-Key' => $t->{primary});
is($res->{status}, 403, 'loc quota: the third call this hour is refused');
is($res->{json}{code}, 'quota_exceeded', 'loc quota: quota_exceeded');
my $to_hour = 3600 - time % 3600;
ok(abs($res->{headers}{'retry-after'} - $to_hour) <= 2, 'loc quota: Retry-After = seconds to the next hour');
# the location quota counts per subscription: another one is not affected
is($n->get('/quota/x', 'X-API-Key' => $s->{primary})->{status}, 200, 'loc quota: per subscription');

# --- plan and location windows together
my $m = Apimon::Nginx::subscribe($r, 'slow');
# slow is a weather plan: tiles is not in it
is($n->get('/both/x', 'X-API-Key' => $m->{primary})->{status}, 403, 'not entitled before any window');
my $mp = Apimon::Nginx::subscribe($r, 'maps');
$res = $n->get('/both/x', 'X-API-Key' => $mp->{primary});
is($res->{status}, 200, 'plan + location windows: 200');
is_deeply(sf($res->{headers}{'ratelimit-policy'}),
          { 'loc-rate' => { q => 100, w => 1 }, 'loc-quota' => { q => 4, w => 604800 } },
          'both location windows advertised');
my $st = sf($res->{headers}{ratelimit});
is($st->{'loc-quota'}{r}, 3, 'loc-quota r=3');
is($st->{'loc-rate'}{r}, 99, 'loc-rate r=99');

# refused calls are not counted: usage shows the accepted ones
my $usage_key = Apimon::Redis::sub_key($t->{id}) . ':usage:' . POSIX::strftime('%Y%m', gmtime);
my %usage = @{ $r->cmd('HGETALL', $usage_key) };
my $day = POSIX::strftime('%Y%m%d', gmtime);
is($usage{"$day|history|ok"}, 2, 'usage: 2 accepted calls');
is($usage{"$day|history|quota_exceeded"}, 1, 'usage: 1 refused call, by reason');

# --- concurrency: a quota of 50, 20 clients x 10 calls at once
my $c = Apimon::Nginx::subscribe($r, 'open');
my $clients = 20;
my $calls = 10;
my @kids;
pipe(my $rd, my $wr) or die "pipe: $!";
for my $k (1 .. $clients) {
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $rd;
        my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 1);
        my $out = '';
        for (1 .. $calls) {
            my $res = $http->get($n->url('/many/x'), { headers => { 'X-API-Key' => $c->{primary} } });
            $out .= "$res->{status}\n";
        }
        syswrite $wr, $out;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
close $wr;
my %status;
while (my $line = <$rd>) {
    chomp $line;
    $status{$line}++;
}
waitpid($_, 0) for @kids;
is($status{200}, 50, 'exactly 50 of 200 parallel calls served');
is($status{403}, 150, 'the other 150 refused');
is(scalar(keys %status), 2, 'no other status') or diag explain \%status;
my $used = $r->quota_count(Apimon::Redis::sub_key($c->{id}), 'loc.forecast', $day);
is($used, 50, 'the counter holds 50');

$n->stop;
done_testing;
