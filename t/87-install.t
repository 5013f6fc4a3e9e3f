#!/usr/bin/perl
# make install into a DESTDIR tree: the expected file list under the default
# PREFIX and under PREFIX=/usr, the paths substituted into the units, the
# cron.d file and the man page, nothing enabled; the units pass
# systemd-analyze verify and the man page groff's warnings when they are
# installed here.
use strict;
use warnings;
use Test::More;
use File::Find;
use File::Temp qw(tempdir);

my $make = $ENV{MAKE} || 'make';
plan skip_all => 'needs the built module and agent (make all)'
    unless -f 'build/ngx_http_apimon_module.so' && -x 'build/billing-agent';

sub slurp { my ($f) = @_; open my $h, '<', $f or return undef; local $/; return scalar <$h> }

sub tree {
    my ($root) = @_;
    my @f;
    find({ no_chdir => 1, wanted => sub {
        push @f, substr($File::Find::name, length $root) if -f $_ || -l $_ } }, $root);
    return [ sort @f ];
}

sub install_into {
    my (@vars) = @_;
    my $d = tempdir('apimon-install-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $out = `$make -s install DESTDIR=$d @vars 2>&1`;
    is($?, 0, "make install DESTDIR @vars: exit 0") or diag $out;
    return $d;
}

my @common = qw(
    /etc/cron.d/apimon-billing-agent
    /etc/default/apimon-billing-agent
    /usr/lib/nginx/modules/ngx_http_apimon_module.so
    /usr/share/nginx/modules-available/mod-http-apimon.conf
);

# the default PREFIX, /usr/local
my $d = install_into();
is_deeply(tree($d), [ sort @common, qw(
    /usr/local/bin/billing-agent
    /usr/local/lib/systemd/system/apimon-billing-agent.service
    /usr/local/lib/systemd/system/apimon-billing-agent.timer
    /usr/local/share/man/man1/billing-agent.1
) ], 'PREFIX /usr/local: the file list');
my $unit = slurp("$d/usr/local/lib/systemd/system/apimon-billing-agent.service");
like($unit, qr{^ExecStart=/bin/sh -c 'exec /usr/local/bin/billing-agent }m, 'service: the agent of PREFIX');
like(slurp("$d/etc/cron.d/apimon-billing-agent"), qr{^#0 3 1,2 \* \*  root .*/usr/local/bin/billing-agent }m,
    'cron.d: the agent of PREFIX');
ok(-x "$d/usr/local/bin/billing-agent", 'the agent is executable');
is(slurp("$d/usr/share/nginx/modules-available/mod-http-apimon.conf"),
    "load_module modules/ngx_http_apimon_module.so;\n", 'the load file');

# PREFIX=/usr as a package builds it
$d = install_into(qw(PREFIX=/usr UNITDIR=/lib/systemd/system));
is_deeply(tree($d), [ sort @common, qw(
    /lib/systemd/system/apimon-billing-agent.service
    /lib/systemd/system/apimon-billing-agent.timer
    /usr/bin/billing-agent
    /usr/share/man/man1/billing-agent.1
) ], 'PREFIX /usr: the file list');

my $service = slurp("$d/lib/systemd/system/apimon-billing-agent.service");
my $timer = slurp("$d/lib/systemd/system/apimon-billing-agent.timer");
my $cron = slurp("$d/etc/cron.d/apimon-billing-agent");
my $man = slurp("$d/usr/share/man/man1/billing-agent.1");
for ([service => $service], [timer => $timer], [cron => $cron], [man => $man],
     [default => slurp("$d/etc/default/apimon-billing-agent")]) {
    unlike($_->[1], qr/\@[A-Z]+\@/, "$_->[0]: every placeholder substituted");
}
like($service, qr{^ExecStart=/bin/sh -c 'exec /usr/bin/billing-agent --stripe-key-file /etc/apimon/stripe.key bill }m,
    'service: /usr/bin/billing-agent, the key file');
like($service, qr/^Type=oneshot$/m, 'service: oneshot');
like($service, qr/^SuccessExitStatus=3$/m, 'service: exit 3 (lock held) is success');
like($service, qr/^EnvironmentFile=-\/etc\/default\/apimon-billing-agent$/m, 'service: its defaults');
unlike($service, qr/^\[Install\]/m, 'service: no [Install]: started by the timer only');
like($timer, qr/^OnCalendar=\*-\*-01 03:00:00 UTC$/m, 'timer: monthly, the 1st at 03:00 UTC');
like($timer, qr/^Persistent=true$/m, 'timer: Persistent=true');
like($timer, qr/^WantedBy=timers\.target$/m, 'timer: can be enabled');
my @jobs = grep { /^\s*[0-9*@]/ } split /\n/, $cron;
is_deeply(\@jobs, [], 'cron.d: no job line enabled');
like($cron, qr{^#0 3 1,2 \* \*  root .*/usr/bin/billing-agent --quiet --stripe-key-file /etc/apimon/stripe.key bill }m,
    'cron.d: the job, commented out');
open my $vh, '<', 'ngx_http_apimon_module/ngx_http_apimon_version.h' or die $!;
my ($version) = join('', <$vh>) =~ /#define APIMON_VERSION\s+"([^"]+)"/;
like($man, qr/^\.TH BILLING-AGENT 1 "[^"]+" "apimon \Q$version\E"/m, "man page: version $version");

# what the tools of this machine say about them
SKIP: {
    skip 'no systemd-analyze', 1 unless system('command -v systemd-analyze >/dev/null') == 0;
    my $out = `systemd-analyze verify --man=no $d/lib/systemd/system/apimon-billing-agent.service $d/lib/systemd/system/apimon-billing-agent.timer 2>&1`;
    # the agent's path is that of the package, absent here: that alone is fine
    my @bad = grep { !/Command \/usr\/bin\/billing-agent is not executable|^\s*$/ } split /\n/, $out;
    is_deeply(\@bad, [], 'systemd-analyze verify: no complaint') or diag $out;
}
SKIP: {
    skip 'no groff', 2 unless system('command -v groff >/dev/null') == 0;
    my $out = `groff -man -ww -z $d/usr/share/man/man1/billing-agent.1 2>&1`;
    is($out, '', 'man page: groff -ww has no warning');
    my $text = `groff -man -Tutf8 -P-c $d/usr/share/man/man1/billing-agent.1 2>/dev/null`;
    $text =~ s/.\x08//g;
    my $help = `build/billing-agent --help`;
    my %opt = map { $_ => 1 } $help =~ /(--[a-z][a-z-]+)/g;
    my @missing = grep { index($text, $_) < 0 } sort keys %opt;
    is_deeply(\@missing, [], 'man page: every option of --help');
}

done_testing;
