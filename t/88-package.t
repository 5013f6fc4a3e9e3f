#!/usr/bin/perl
# The Debian packages. When make deb has built them (build/deb/*.deb): their
# file lists, the module package's nginx-abi dependency, the agent's units
# not enabled. When they are installed on this machine (.ci/run installs
# them): dpkg -L, the modules-enabled link made by the package, nginx -t with
# a configuration that includes /etc/nginx/modules-enabled/*.conf, the
# installed agent's --version, and nothing of the agent's enabled.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use Cwd qw(getcwd);

sub slurp { my ($f) = @_; open my $h, '<', $f or return undef; local $/; return scalar <$h> }
sub lines { my ($cmd) = @_; my @l = `$cmd`; chomp @l; return @l }

open my $vh, '<', 'ngx_http_apimon_module/ngx_http_apimon_version.h' or die $!;
my ($version) = join('', <$vh>) =~ /#define APIMON_VERSION\s+"([^"]+)"/;
my $abi = (slurp('/usr/share/nginx/src/debian/libnginx-mod.abisubstvars') // '') =~ /^nginx:abi=(\S+)/m ? $1 : undef;

my %want = (
    'libnginx-mod-http-apimon' => [ qw(
        /usr/lib/nginx/modules/ngx_http_apimon_module.so
        /usr/share/nginx/modules-available/mod-http-apimon.conf
    ) ],
    'apimon-billing-agent' => [ qw(
        /etc/cron.d/apimon-billing-agent
        /etc/default/apimon-billing-agent
        /lib/systemd/system/apimon-billing-agent.service
        /lib/systemd/system/apimon-billing-agent.timer
        /usr/bin/billing-agent
        /usr/share/man/man1/billing-agent.1.gz
    ) ],
);
# what every package holds besides: its documentation directory
sub ours { my ($pkg, @f) = @_; return [ sort grep { !m{^/usr/share/doc/} } @f ] }

is(($version // '') ne '' && (slurp('debian/changelog') // '') =~ /^apimon \(\Q$version\E\)/ ? 1 : 0, 1,
   "debian/changelog is at the tree's version $version");

SKIP: {
    my @debs = grep { !/-dbgsym_/ } glob('build/deb/*.deb');
    skip 'no packages built (make deb)', 11 unless @debs == 2;
    for my $pkg (sort keys %want) {
        my ($deb) = grep { m{/\Q$pkg\E_\Q$version\E_[^/]+\.deb$} } @debs;
        ok($deb, "$pkg: build/deb holds its $version package") or next;
        my @files = map { (split ' ', $_, 6)[5] } lines("dpkg-deb -c $deb");
        @files = map { s{^\.}{}r =~ s{ -> .*}{}r } grep { !m{/$} } @files;
        is_deeply(ours($pkg, @files), $want{$pkg}, "$pkg: the file list");
        my $dep = join ' ', lines("dpkg-deb -f $deb Depends");
        if ($pkg =~ /^libnginx-mod/) {
            like($dep, qr/(^|, )\Q$abi\E(,|$)/, "$pkg: depends on the nginx ABI it was built for ($abi)");
            like(join("\n", lines("dpkg-deb -I $deb postinst")), qr/modules-enabled/,
                 "$pkg: its postinst links the load file into modules-enabled");
        } else {
            unlike($dep, qr/nginx-abi/, "$pkg: no nginx ABI dependency");
            # an upgrade keeps what the administrator enabled (was-enabled)
            my $post = join "\n", lines("dpkg-deb -I $deb postinst 2>/dev/null");
            unlike($post =~ s/if deb-systemd-helper --quiet was-enabled .*?\n\s*fi//sgr,
                   qr/deb-systemd-helper enable|deb-systemd-invoke|systemctl/,
                   "$pkg: the postinst enables and starts nothing");
        }
    }
    my $tmp = tempdir('apimon-deb-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my ($deb) = grep { /apimon-billing-agent_/ } @debs;
    system('dpkg-deb', '-x', $deb, $tmp) == 0 or die "dpkg-deb -x $deb";
    is(join('', lines("$tmp/usr/bin/billing-agent --version")), "billing-agent $version",
       'the packaged agent runs: --version');
    like(slurp("$tmp/lib/systemd/system/apimon-billing-agent.service") // '',
         qr{^ExecStart=/bin/sh -c 'exec /usr/bin/billing-agent }m, 'the packaged service runs /usr/bin/billing-agent');
    ($deb) = grep { /libnginx-mod-http-apimon_/ } @debs;
    system('dpkg-deb', '-x', $deb, $tmp) == 0 or die "dpkg-deb -x $deb";
    is(slurp("$tmp/usr/share/nginx/modules-available/mod-http-apimon.conf"),
       "load_module modules/ngx_http_apimon_module.so;\n", 'the packaged load file');
}

SKIP: {
    my $st = join '', lines("dpkg-query -W -f='\${Status}' libnginx-mod-http-apimon apimon-billing-agent 2>/dev/null");
    my $n = () = $st =~ /install ok installed/g;
    skip 'the packages are not installed here (.ci/run installs them)', 12 unless $n == 2;
    my $have = join ' ', lines("dpkg-query -W -f='\${Version} ' libnginx-mod-http-apimon apimon-billing-agent");
    skip "the packages installed here are $have, the tree $version", 12 if $have ne "$version $version ";

    for my $pkg (sort keys %want) {
        my @files = grep { -e $_ && !-d $_ } lines("dpkg -L $pkg");
        is_deeply(ours($pkg, @files), $want{$pkg}, "$pkg installed: dpkg -L");
        is(join('', lines("dpkg-query -W -f='\${Version}' $pkg")), $version, "$pkg installed: version $version");
    }
    my $link = '/etc/nginx/modules-enabled/50-mod-http-apimon.conf';
    ok(-l $link, 'the package linked the load file into modules-enabled');
    is(readlink($link), '/usr/share/nginx/modules-available/mod-http-apimon.conf', '... to modules-available');

    # nginx -t: a configuration of our own that loads what modules-enabled names
    my $p = tempdir('apimon-pkg-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    mkdir "$p/logs";
    # the load file names modules/...: relative to the prefix, as in Debian's
    symlink '/usr/lib/nginx/modules', "$p/modules" or die $!;
    open my $c, '>', "$p/nginx.conf" or die $!;
    print $c "include /etc/nginx/modules-enabled/*.conf;\npid $p/nginx.pid;\nerror_log $p/logs/error.log;\n"
        . "events {}\nhttp {\n    apimon_redis localhost:6379;\n    server {\n        listen 127.0.0.1:1;\n"
        . "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://127.0.0.1:2; }\n    }\n}\n";
    close $c;
    my $out = `nginx -t -p $p/ -c $p/nginx.conf 2>&1`;
    is($?, 0, 'nginx -t with include /etc/nginx/modules-enabled/*.conf: the apimon directives are known') or diag $out;
    like($out, qr/syntax is ok/, 'nginx -t: syntax is ok');

    is(join('', lines('/usr/bin/billing-agent --version')), "billing-agent $version", 'installed agent: --version');
    ok(!-e '/etc/systemd/system/timers.target.wants/apimon-billing-agent.timer', 'the timer is not enabled');
    ok(!grep({ /^\s*[0-9*@]/ } split /\n/, slurp('/etc/cron.d/apimon-billing-agent') // ''),
       'the cron.d job is not enabled');
    SKIP: {
        skip 'no man here', 1 if system('command -v man >/dev/null 2>&1') != 0;
        like(join('', lines('man -w billing-agent 2>/dev/null')), qr{/usr/share/man/man1/billing-agent\.1\.gz},
             'man billing-agent finds the page');
    }
}

done_testing;
