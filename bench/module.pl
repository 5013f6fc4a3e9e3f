#!/usr/bin/perl
# make bench, part 1: what apimon costs a proxy, measured side by side in one
# interleaved run on this machine with wrk.
#
# Variants, each through an nginx (the front) proxying to a separate
# upstream nginx (kept alive):
#   plain  the front's location without apimon (the baseline of every ratio)
#   subs   apimon (key, plan rate + quota, location rate + quota, usage) with
#          BENCH_SUBS distinct subscriptions, each request's key drawn
#          uniformly at random (bench/rotate.lua): the headline
#   noop   the same front built with a check script that does nothing
#          (bench/noop-check.lua): the ceiling of any design that asks Redis
#          per request
#   hot    apimon with one key for every request (the old figure)
#   lease  apimon in lease mode (apimon_lease) with BENCH_SUBS other
#          subscriptions, rotating as for subs
# (a variant with another check script, say today's kept as a baseline, is
# a line of %variant and one of %check: bench/check-module.sh builds it)
# for every worker_processes of BENCH_WORKERS and connection count of
# BENCH_CONNECTIONS; all fronts run at once, idle but for the one measured.
# A round measures every variant once per setting, in an order rotated each
# round; ratios are taken within a round, then the median and min-max over
# rounds. Per run also: p50/p99, nginx worker CPU per request, Redis CPU per
# check (inside the script: INFO commandstats; the whole process: /proc),
# Redis commands per check, checks per script call, and the CPU time the
# machine spent outside the bench's own processes (/proc/stat): a run where
# it exceeds BENCH_FOREIGN of the machine is flagged. At the end: no response
# was refused, and the usage Redis counted equals the requests the upstream
# served for each apimon variant (refusals counted: none).
#
# Environment: BENCH_SUBS (1000), BENCH_ROUNDS (3), BENCH_DURATION (s per
# run, 5), BENCH_WARMUP (s, 2), BENCH_WORKERS ("1 2"), BENCH_CONNECTIONS
# ("50 200"), BENCH_THREADS (wrk, 2), BENCH_UPSTREAM_WORKERS (1),
# BENCH_FOREIGN (0.05), BENCH_VARIANTS ("plain subs noop hot lease").

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib", "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use File::Spec;
use HTTP::Tiny;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use List::Util qw(max uniq);
use Apimon::Redis;
use Bench;

my $nsubs    = $ENV{BENCH_SUBS}        || 1000;
my $rounds   = $ENV{BENCH_ROUNDS}      || 3;
my $dur      = $ENV{BENCH_DURATION}    || 5;
my $warmup   = $ENV{BENCH_WARMUP}      // 2;
my @workers  = split ' ', ($ENV{BENCH_WORKERS}     || '1 2');
my @conns    = split ' ', ($ENV{BENCH_CONNECTIONS} || '50 200');
my $threads  = $ENV{BENCH_THREADS}     || 2;
my $upw      = $ENV{BENCH_UPSTREAM_WORKERS} || 1;
my $foreign_max = $ENV{BENCH_FOREIGN}  || 0.05;
my @variants = split ' ', ($ENV{BENCH_VARIANTS} || 'plain subs noop hot lease');
my $build    = File::Spec->rel2abs($ENV{APIMON_BUILD} || "$FindBin::Bin/../build");   # nginx -p changes the base
my $ncpu     = `nproc` =~ s/\s+//r;

system('which wrk >/dev/null 2>&1') == 0 or die "wrk is not installed (apt-get install wrk)\n";
die "BENCH_VARIANTS: the ratios need plain\n" unless grep { $_ eq 'plain' } @variants;

my $dir = tempdir('apimon-bench-XXXXXX', TMPDIR => 1, CLEANUP => 1);
# what each variant sends to which front: "built" is the module as built,
# another front's name that of a module built with the check script of %check
my %variant = (
    plain => { front => 'built', path => '/plain/bench', keys => "$dir/subs.keys", label => 'plain proxy' },
    subs  => { front => 'built', path => '/api/bench',   keys => "$dir/subs.keys",
               label => 'apimon, ' . Bench::fmt($nsubs) . ' subscriptions' },
    noop  => { front => 'noop',  path => '/api/bench',   keys => "$dir/subs.keys", label => 'apimon, no-op check (ceiling)' },
    hot   => { front => 'built', path => '/api/bench',   keys => "$dir/hot.keys", label => 'apimon, one hot key (old figure)' },
    lease => { front => 'lease', path => '/api/bench',   keys => "$dir/lease.keys",
               label => 'apimon lease, ' . Bench::fmt($nsubs) . ' subs' },
);
# fronts of the module as built with more in their http{} block
my %front_http = (lease => 'apimon_lease 8m;');
my %check = (noop => "$FindBin::Bin/noop-check.lua");
my %label = map { $_ => $variant{$_}{label} } keys %variant;

# ---------------------------------------------------------------- setup

my $redis = Apimon::Redis->start;
# one product, one plan whose limits never refuse during the run: the check
# still evaluates and counts every window
$redis->apply_catalog(<<'JSON');
{"products": [{"name": "bench", "displayName": "Bench", "apis": ["echo"]}],
 "plans": [{"name": "bench-gold", "product": "bench", "displayName": "Gold",
            "rateLimit": {"limit": 1000000, "per": "second"},
            "quota": {"limit": 1000000000, "period": "month"},
            "pricing": {"model": "flat", "currency": "usd", "amount": 1000}}]}
JSON
$redis->put_developer('bench@example.com', { firstName => 'Bench', lastName => 'User', userName => 'bench' });
my %plan = (owner => 'bench@example.com', product => 'bench', plan => 'bench-gold');
my $t0 = time;
my @subs = Bench::provision($redis, $nsubs, %plan);
my ($hot) = Bench::provision($redis, 1, %plan);
my @lsubs = (grep { $_ eq 'lease' } @variants) ? Bench::provision($redis, $nsubs, %plan) : ();
# the sanity check's key on a lease front (a lease outlives the check)
my ($probe) = Bench::provision($redis, 1, %plan);
my $provision_s = time - $t0;
write_file("$dir/subs.keys", join('', map { "$_->{primary}\n" } @subs));
write_file("$dir/hot.keys", "$hot->{primary}\n");
write_file("$dir/lease.keys", join('', map { "$_->{primary}\n" } @lsubs));

my %so = (built => "$build/ngx_http_apimon_module.so");
$so{$_} = $so{built} for keys %front_http;
for my $name (uniq(map { $variant{$_}{front} } @variants)) {
    next if $so{$name};
    chomp($so{$name} = `sh $FindBin::Bin/check-module.sh $build $name $check{$name}`);
    die "bench/check-module.sh $name failed\n" if $? || !-f $so{$name};
}

my $up = { port => Bench::free_port(), status => Bench::free_port() };
start_nginx($up, 'upstream', Bench::upstream_conf(workers => $upw, port => $up->{port},
                                                  status => $up->{status}, dir => "$dir/upstream"));

# the fronts: per worker count one per module
my %front;
for my $w (@workers) {
    for my $kind (sort keys %so) {
        my $f = $front{$w}{$kind} = { port => Bench::free_port(), status => Bench::free_port() };
        my $d = "$dir/front-$w-$kind";
        start_nginx($f, $d, Bench::nginx_conf_head(
            module => $so{$kind}, workers => $w, dir => $d,
            rport => $redis->port, up => $up->{port}, external => 1, keepalive => 256)
            . ($front_http{$kind} ? "    $front_http{$kind}\n" : '') . <<"CONF");

    server {
        listen 127.0.0.1:$f->{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location /plain/ { proxy_pass http://backend; }

        location /api/ {
            apimon on;
            apimon_api echo;
            apimon_rate 1000000r/s;
            apimon_quota 1000000000 day;
            proxy_pass http://backend;
        }
    }
    server { listen 127.0.0.1:$f->{status}; location / { stub_status; } }
}
CONF
        # sanity: the protected location really enforces (401 without a key)
        my $sane = $front_http{$kind} ? $probe : $hot;
        my %code = (none => get($f, '/api/x'), key => get($f, '/api/x', $sane->{primary}),
                    plain => get($f, '/plain/x'));
        die "sanity check of the $kind front ($w workers) failed: no key $code{none}, key $code{key}, plain $code{plain}\n"
            unless $code{none} == 401 && $code{key} == 200 && $code{plain} == 200;
    }
}
my %usage0 = (hot => usage([ $hot ]));   # the sanity checks counted

# every pid of the bench, for what the machine spent outside it
my @ours = ($redis->pid, map { ($_->{pid}, @{ $_->{workers} }) } $up, map { values %$_ } values %front);


# ---------------------------------------------------------------- runs

my (%res, %served, $responses, $refused, $socket_errors);
my $start = time;
my $load0 = loadavg();
if ($warmup) {
    for my $w (@workers) { measure($w, $_, $conns[-1], $warmup) for @variants }
}
for my $r (0 .. $rounds - 1) {
    for my $w (@workers) {
        for my $c (@conns) {
            my @order = @variants[map { ($_ + $r) % @variants } 0 .. $#variants];
            $res{$w}{$c}{$_}[$r] = measure($w, $_, $c, $dur) for @order;
        }
    }
}
my $load1 = loadavg();
my $elapsed = time - $start;

for my $f ($up, map { values %$_ } values %front) { kill 'QUIT', $f->{pid}; waitpid $f->{pid}, 0 }
# (the fronts quit gracefully: the lease front returned its leases)
my %usage = (subs => usage(\@subs), hot => usage([ $hot ]), @lsubs ? (lease => usage(\@lsubs)) : ());
$redis->stop;

# ---------------------------------------------------------------- report

printf "\nmodule benchmark (%s UTC): %d cores; wrk -t%d, %d rounds of %d s per variant and setting;\n",
    strftime('%Y-%m-%d %H:%M', gmtime $start), $ncpu, $threads, $rounds, $dur;
printf "front nginx -> separate upstream nginx (%d worker%s, keepalive 256); %s subscriptions made in %.1f s\n",
    $upw, $upw > 1 ? 's' : '', Bench::fmt($nsubs), $provision_s;
my @flagged;
for my $w (@workers) {
    for my $c (@conns) {
        my $set = $res{$w}{$c};
        printf "\n  worker_processes %d, %d connections\n", $w, $c;
        printf "    %-34s %-26s %8s %8s  %-20s %9s %14s %9s %8s\n", '', 'req/s median (min-max)', 'p50', 'p99',
            'ratio (min-max)', 'nginx', 'Redis us/check', 'commands', 'checks';
        printf "    %-34s %-26s %8s %8s  %-20s %9s %14s %9s %8s\n", '', '', '', '', '', 'us/req', 'script  proc', '/check', '/call';
        for my $v (@variants) {
            my @runs = @{ $set->{$v} };
            my @ratio = map { $runs[$_]{rps} / $set->{plain}[$_]{rps} } 0 .. $#runs;
            my $apimon = $v ne 'plain';
            printf "    %-34s %-26s %8s %8s  %-20s %9.1f %14s %9s %8s\n", $label{$v},
                range(map { $_->{rps} } @runs), ms(median(map { $_->{p50} } @runs)), ms(median(map { $_->{p99} } @runs)),
                $apimon ? range2(@ratio) : '1', median(map { $_->{nginx_us} } @runs),
                $apimon ? sprintf('%6.1f %6.1f', median(map { $_->{script_us} } @runs), median(map { $_->{redis_us} } @runs)) : '',
                $apimon ? sprintf('%.2f', median(map { $_->{cmds} } @runs)) : '',
                $apimon ? sprintf('%.1f', median(map { $_->{per_call} } @runs)) : '';
            $set->{ratio}{$v} = \@ratio;
        }
        my @rl;
        for my $r (0 .. $rounds - 1) {
            my @f = grep { $set->{$_}[$r]{foreign} > $foreign_max } @variants;
            push @flagged, "$w worker(s), c=$c, round " . ($r + 1) . ": @f" if @f;
            my $most = max(map { $set->{$_}[$r]{foreign} } @variants);
            push @rl, sprintf('round %d: %s%s', $r + 1,
                join(' ', map { sprintf '%.2f', $set->{ratio}{$_}[$r] } grep { $_ ne 'plain' } @variants),
                @f ? sprintf(' (other load, up to %.0f%%)', 100 * $most) : '');
        }
        printf "    ratios per round (%s): %s\n", join(', ', grep { $_ ne 'plain' } @variants), join('; ', @rl);
    }
}

# the commands the check scripts ran, per check, over every run of a variant
for my $v (grep { $_ ne 'plain' } @variants) {
    my (%calls, $checks);
    for my $w (@workers) {
        for my $c (@conns) {
            for my $run (@{ $res{$w}{$c}{$v} }) {
                $checks += $run->{requests};
                $calls{$_} += $run->{cmdstat}{$_} for keys %{ $run->{cmdstat} };
            }
        }
    }
    printf "\n  %s: Redis commands per check: %s", $label{$v},
        join(', ', map { sprintf '%s %.3f', $_, $calls{$_} / $checks } sort { $calls{$b} <=> $calls{$a} } keys %calls) || 'none';
}
print "\n\nheadline: apimon with " . Bench::fmt($nsubs) . " subscriptions / plain proxy, median (min-max) of $rounds rounds\n";
for my $w (@workers) {
    for my $c (@conns) {
        my $ra = $res{$w}{$c}{ratio};
        printf "  %d worker%s, c=%-4d %-16s%s\n", $w, $w > 1 ? 's' : ' ', $c, range2(@{ $ra->{subs} || [0] }),
            join('', map { sprintf '   %s %s', $_ eq 'noop' ? 'no-op check' : 'one hot key', range2(@{ $ra->{$_} }) }
                     grep { $ra->{$_} } 'noop', 'hot');
    }
}

print "\nverification:\n";
printf "  wrk: %s responses, %d refused (status >= 400), %d socket errors\n", Bench::fmt($responses), $refused, $socket_errors;
my $ok = $refused == 0;
for my $v (grep { $usage{$_} } @variants) {
    my $counted = $usage{$v}{ok} - ($usage0{$v} ? $usage0{$v}{ok} : 0);
    my $match = $counted == $served{$v} && $usage{$v}{refused} == 0;
    $ok &&= $match;
    printf "  %s: usage counted in Redis %s, served by the upstream %s, refusals counted %d: %s\n", $label{$v},
        Bench::fmt($counted), Bench::fmt($served{$v}), $usage{$v}{refused}, $match ? 'equal' : 'MISMATCH';
}
printf "  machine: load average %.2f before, %.2f after (%.0f s)\n", $load0, $load1, $elapsed;
if (@flagged) {
    printf "  WARNING: %d of %d rounds of a setting had runs sharing the machine with other load (CPU outside the bench > %.0f%% of the machine):\n    %s\n",
        scalar @flagged, $rounds * @workers * @conns, 100 * $foreign_max, join("\n    ", @flagged);
} else {
    printf "  no run shared the machine with other load (CPU outside the bench <= %.0f%% of the machine in every run)\n",
        100 * $foreign_max;
}
print $ok ? "  verified: nothing refused, usage equals requests served\n" : "  VERIFICATION FAILED\n";
exit($ok ? 0 : 1);

# ---------------------------------------------------------------- helpers

# One wrk run of variant $v at $c connections against the $w-worker front,
# with what the processes and the machine spent meanwhile.
sub measure {
    my ($w, $v, $c, $d) = @_;
    my $var = $variant{$v};
    my $f = $front{$w}{ $var->{front} };
    my %b = sample($f);
    $redis->cmd('CONFIG', 'RESETSTAT');
    my $out = `wrk -t$threads -c$c -d${d}s --timeout 10s -s $FindBin::Bin/rotate.lua http://127.0.0.1:$f->{port}$var->{path} -- $var->{keys} 2>&1`;
    sleep 0.1;   # requests still in flight when wrk stopped
    my $stats = $redis->cmd('INFO', 'commandstats');
    my %a = sample($f);
    if ($ENV{BENCH_DEBUG}) {
        my %after = all_cpu();
        my %mine = map { $_ => 1 } @ours;
        my @top = sort { $b->[1] <=> $a->[1] } grep { $_->[1] > 0.01 }
            map { [ $_, $after{$_}[0] - ($b{all}{$_} ? $b{all}{$_}[0] : 0), $after{$_}[1] ] } grep { !$mine{$_} && $_ != $$ } keys %after;
        printf STDERR "%s w=%d c=%d: machine busy %.2f s, ours %.2f s, foreign %.2f s (%.1f%%), steal %.2f; other processes: %s\n",
            $v, $w, $c, $a{busy} - $b{busy}, $a{ours} - $b{ours}, ($a{busy} - $b{busy}) - ($a{ours} - $b{ours}),
            100 * (($a{busy} - $b{busy}) - ($a{ours} - $b{ours})) / ($ncpu * ($a{wall} - $b{wall})), $a{steal} - $b{steal},
            join(', ', map { sprintf '%s %s %.2f', $_->[0], $_->[2], $_->[1] } @top[0 .. ($#top < 7 ? $#top : 7)]);
    }
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my %k = $out =~ /(\w+)=(\d+)/g;
    die "wrk failed:\n$out" unless $rps && defined $k{p99_us};
    my $n = $a{front} - $b{front} - 1;                  # less the second status request
    $served{$v} += $a{upstream} - $b{upstream} - 1;
    $responses += $k{responses};
    $refused += $k{status_errors};
    $socket_errors += $k{socket_errors};
    my (%cmd, $script_us, $calls);
    while ($stats =~ /^cmdstat_(\w+):calls=(\d+),usec=(\d+)/mg) {
        my ($name, $ncalls, $usec) = ($1, $2, $3);
        if ($name eq 'evalsha' || $name eq 'eval') { $script_us += $usec; $calls += $ncalls }
        elsif ($name !~ /^(config|info)$/) { $cmd{$name} = $ncalls }
    }
    my $cmds = 0;
    $cmds += $_ for values %cmd;
    my $wall = $a{wall} - $b{wall};
    my $foreign = ($a{busy} - $b{busy}) - ($a{ours} - $b{ours});
    return {
        rps => $rps, p50 => $k{p50_us}, p99 => $k{p99_us}, requests => $n,
        nginx_us  => ($a{workers} - $b{workers}) * 1e6 / $n,
        redis_us  => ($a{redis} - $b{redis}) * 1e6 / $n,
        script_us => ($script_us // 0) / $n,
        cmds      => $cmds / $n,
        cmdstat   => \%cmd,
        per_call  => $calls ? $n / $calls : 0,
        foreign   => $foreign / ($ncpu * $wall),
        steal     => ($a{steal} - $b{steal}) / ($ncpu * $wall),
    };
}

# the counters measure() compares before and after a run
sub sample {
    my ($f) = @_;
    my %s = (front => Bench::nginx_requests($f->{status}), upstream => Bench::nginx_requests($up->{status}));
    my ($u, $s, $cu, $cs) = times;   # this process and the reaped children (wrk)
    $s{ours} = $u + $s + $cu + $cs;
    $s{ours} += Bench::proc_cpu($_) for @ours;
    $s{workers} = 0;
    $s{workers} += Bench::proc_cpu($_) for @{ $f->{workers} };
    $s{redis} = Bench::proc_cpu($redis->pid);
    my $m = Bench::machine_cpu();
    @s{qw(busy steal)} = @$m{qw(busy steal)};
    $s{wall} = time;
    $s{all} = { all_cpu() } if $ENV{BENCH_DEBUG};
    return %s;
}

# accepted and refused calls in the usage hashes of these subscriptions
# (every month the bench ran in)
sub usage {
    my ($list) = @_;
    my @months = do { my %m = map { (strftime('%Y%m', gmtime $_) => 1) } $start // time, time; sort keys %m };
    my %u = (ok => 0, refused => 0);
    for (my $i = 0; $i < @$list; $i += 1000) {
        my @chunk = @$list[$i .. ($i + 999 < $#$list ? $i + 999 : $#$list)];
        my @keys = map { my $s = $_; map { "$s->{key}:usage:$_" } @months } @chunk;
        for my $h (Bench::pipeline($redis, join('', map { Apimon::Redis::_encode('HGETALL', $_) } @keys), scalar @keys)) {
            my %f = @$h;
            $u{ $_ =~ /\|ok$/ ? 'ok' : 'refused' } += $f{$_} for keys %f;
        }
    }
    return \%u;
}

sub start_nginx {
    my ($f, $d, $conf) = @_;
    $d = "$dir/$d" unless $d =~ m{^/};
    mkdir $d;
    mkdir "$d/logs";
    write_file("$d/nginx.conf", $conf);
    $f->{pid} = Bench::start_nginx($d, $f->{port});
    Bench::wait_port($f->{status}, $d);
    $f->{workers} = [ Bench::children($f->{pid}) ];
}

sub get {
    my ($f, $path, $key) = @_;
    return HTTP::Tiny->new(timeout => 5)->get("http://127.0.0.1:$f->{port}$path",
        { headers => { $key ? ('X-API-Key' => $key) : () } })->{status};
}

# BENCH_DEBUG: pid => [CPU seconds, name] of every process
sub all_cpu {
    my %c;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        my ($pid, $name) = $line =~ /^(\d+) \((.*)\) /;
        $c{$pid} = [ Bench::proc_cpu($pid), $name ];
    }
    return %c;
}

sub loadavg {
    open my $fh, '<', '/proc/loadavg' or return 0;
    return (split ' ', <$fh>)[0];
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return 0 unless @s;
    return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

sub range {
    my @s = sort { $a <=> $b } @_;
    return sprintf '%s (%s-%s)', Bench::fmt(median(@s)), Bench::fmt($s[0]), Bench::fmt($s[-1]);
}

sub range2 {
    my @s = sort { $a <=> $b } @_;
    return sprintf '%.2f (%.2f-%.2f)', median(@s), $s[0], $s[-1];
}

sub ms { sprintf '%.2fms', $_[0] / 1000 }

sub write_file {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh or die "$file: $!";
}
