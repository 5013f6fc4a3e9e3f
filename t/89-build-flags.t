#!/usr/bin/perl
# The Makefile honours the builder's CPPFLAGS, CFLAGS and LDFLAGS (as
# dpkg-buildflags gives them) for the agent, the unit tests and the module,
# without losing its own -I and warning flags (make -n: nothing is built).
use strict;
use warnings;
use Test::More;

my $make = $ENV{MAKE} || 'make';
my @flags = ('CFLAGS=-O1 -fno-common', 'CPPFLAGS=-DAPIMON_T89=1', 'LDFLAGS=-Wl,--as-needed');

sub dry { my @a = @_; open my $h, '-|', $make, '-n', '-B', @a or die $!; local $/; my $t = <$h>; close $h; return ($? >> 8, $t) }

use Cwd qw(getcwd);
my ($rc, $out) = dry(@flags, getcwd() . '/build/agent/util.o');
is($rc, 0, 'make -n with the builder\'s flags: exit 0');
my ($cc) = grep { /-c -o \S*build\/agent\/util\.o/ } split /\n/, $out;
ok($cc, 'the agent\'s compile line') or diag $out;
like($cc, qr/-std=gnu11 -Wall -Wextra -Werror -I\S*build\/gen -Ibilling-agent -Ingx_http_apimon_module/,
    'compile: our flags stay');
like($cc, qr/-DAPIMON_T89=1 -O1 -fno-common -c/, 'compile: CPPFLAGS then CFLAGS, after ours');

($rc, $out) = dry(@flags, 'agent');
my ($ld) = grep { /-o \S*build\/billing-agent / } split /\n/, $out;
like($ld // '', qr/-O1 -fno-common -Wl,--as-needed -o /, 'link: CFLAGS and LDFLAGS');
like($ld // '', qr/-lhiredis -lcurl -lcjson -lcrypto -lz$/, 'link: our libraries last');

($rc, $out) = dry(@flags, 'unit');
my ($unit) = grep { /-o \S*build\/unit\/test_redis_addr / } split /\n/, $out;
like($unit // '', qr/-Werror .*-DAPIMON_T89=1 -O1 -fno-common -Wl,--as-needed -o /,
    'unit tests: ours, CPPFLAGS, CFLAGS, LDFLAGS');

($rc, $out) = dry(@flags, 'module');
like($out, qr/--with-cc-opt="[^"]*-fPIC -D_FORTIFY_SOURCE=2 -DAPIMON_T89=1 -O1 -fno-common"/,
    'module: nginx\'s flags, then CPPFLAGS and CFLAGS');
like($out, qr/--with-ld-opt="[^"]*-fPIC -Wl,--as-needed"/, 'module: LDFLAGS');

# the flags are recorded: a change of them rebuilds what they went into
like($out, qr/cmp -s - \S*build\/flags/, 'the flags are compared with the last build\'s');

done_testing;
