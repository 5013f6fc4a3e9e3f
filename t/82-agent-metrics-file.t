#!/usr/bin/perl
# billing-agent --metrics-file: a node-exporter textfile of the run (strict
# exposition format), its counts and amounts equal to the report's, written
# by rename (no temporary file left), also for a failed run.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent setup_models agent_env);
use Apimon::Prom;
use File::Temp qw(tempdir);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
setup_models($r);
my $dir = tempdir(CLEANUP => 1);
my $env = agent_env($r, $stripe);
my $prom = "$dir/apimon.prom";

sub slurp { open my $f, '<', $_[0] or return undef; local $/; my $s = <$f>; return $s }

my $run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--max-rps', '1000',
    '--report', "$dir/report.csv", '--metrics-file', $prom]);
is($run->{rc}, 0, 'bill: exit 0') or diag $run->{err};

my $text = slurp($prom);
ok(defined $text, 'the metrics file is written');
my $m = eval { Apimon::Prom::parse_exposition($text) };
ok($m, 'it parses as exposition format') or diag $@, $text;
opendir my $dh, $dir or die;
is_deeply([grep { /\.tmp/ } readdir $dh], [], 'no temporary file left');

# the report's rows, by status and by currency and status
my (%n, %amount);
open my $f, '<', "$dir/report.csv" or die;
<$f>;
while (<$f>) {
    chomp;
    my @c = split /,/, $_, -1;
    $n{$c[10]}++;
    $amount{"$c[9]|$c[10]"} += $c[8] || 0 if $c[9] ne '';
}
close $f;
ok($n{done}, "the run has done lines ($n{done})");

my %got = map { /outcome=([^,}]*)/; ($1 => $m->{apimon_billing_outcomes}{samples}{$_}) }
    keys %{ $m->{apimon_billing_outcomes}{samples} };
is_deeply(\%got, \%n, 'apimon_billing_outcomes: the report\'s counts by status');
my %gota;
for (keys %{ $m->{apimon_billing_amount_minor_units}{samples} }) {
    my ($cur) = /currency=([^,}]*)/;
    my ($out) = /outcome=([^,}]*)/;
    $gota{"$cur|$out"} = $m->{apimon_billing_amount_minor_units}{samples}{$_};
}
is_deeply(\%gota, \%amount, 'apimon_billing_amount_minor_units: the report\'s amounts by currency and status');
is($m->{$_}{type}, 'gauge', "$_: a gauge") for qw(apimon_billing_outcomes apimon_billing_amount_minor_units
    apimon_billing_run_duration_seconds apimon_billing_run_exit_code apimon_billing_run_timestamp_seconds);
is($m->{apimon_billing_run_exit_code}{samples}{'apimon_billing_run_exit_code{}'}, 0, 'exit code 0');
my $d = $m->{apimon_billing_run_duration_seconds}{samples}{'apimon_billing_run_duration_seconds{}'};
ok($d > 0 && $d < 120, "duration in seconds ($d)");
my $ts = $m->{apimon_billing_run_timestamp_seconds}{samples}{'apimon_billing_run_timestamp_seconds{}'};
ok(abs($ts - time) < 120, 'end time: now, in Unix seconds');

# a rerun: the same file replaced, every line already done
my $ino = (stat $prom)[1];
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--metrics-file', $prom]);
is($run->{rc}, 0, 'rerun: exit 0');
$m = Apimon::Prom::parse_exposition(slurp($prom));
isnt((stat $prom)[1], $ino, 'the file was replaced by rename (a new inode)');
is($m->{apimon_billing_outcomes}{samples}{'apimon_billing_outcomes{outcome=posted}'}, undef, 'rerun: nothing posted');

# a failed run still writes its outcome: the Stripe key is refused
my %bad = (%$env, STRIPE_API_KEY => 'sk_test_wrong');
$run = run_agent(env => \%bad, args => ['bill', '--period', '2026-02', '--allow-open', '--metrics-file', $prom]);
isnt($run->{rc}, 0, "a failing run: exit $run->{rc}");
$m = Apimon::Prom::parse_exposition(slurp($prom));
is($m->{apimon_billing_run_exit_code}{samples}{'apimon_billing_run_exit_code{}'}, $run->{rc}, 'its exit code is in the file');

# a directory that cannot be written: said, and the exit status says so
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--metrics-file', "$dir/no/such/dir/a.prom"]);
isnt($run->{rc}, 0, 'an unwritable metrics file: not 0');
like($run->{err}, qr{--metrics-file \Q$dir\E/no/such/dir/a\.prom}, 'the error names the file');

done_testing;
