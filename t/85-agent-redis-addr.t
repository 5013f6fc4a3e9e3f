#!/usr/bin/perl
# The billing agent's Redis address in every form the module's apimon_redis
# takes, each against a redis-server that listens on that form: a host name,
# IPv6 loopback, a unix socket, db=, requirepass with a password file; the
# refusals (exit 2, the reason, never the password); --version.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Agent qw(run_agent setup_models);
use File::Temp qw(tempdir);
use IO::Socket::IP;

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $dir = tempdir('apimon-addr-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $sock = "$dir/redis.sock";
my $ipv6 = IO::Socket::IP->new(LocalHost => '::1', LocalPort => 0, Proto => 'tcp',
                               Listen => 1) ? 1 : 0;
my $r = Apimon::Redis->start(args => ['--bind', $ipv6 ? '127.0.0.1 ::1' : '127.0.0.1',
    '--unixsocket', $sock, '--unixsocketperm', '700']);
my $port = $r->port;
my $catalog = 'schema/catalog.example.json';

sub write_file { my ($f, $t, $mode) = @_; open my $h, '>', $f or die $!; print $h $t; close $h; chmod $mode // 0600, $f }

# the agent's catalog lands in database $db of the Redis at $addr
sub applies_in {
    my ($addr, $db, $what, %env) = @_;
    $r->cmd('SELECT', 0);
    $r->flushall;
    my $run = run_agent(env => { APIMON_REDIS => undef, APIMON_REDIS_PASSWORD => undef, %env },
        args => [defined $addr ? ('--redis', $addr) : (), 'catalog', 'apply', $catalog]);
    is($run->{rc}, 0, "$what: catalog apply, exit 0") or diag $run->{err};
    $r->cmd('SELECT', $db);
    is($r->cmd('HGET', 'apimon:catalog', 'version'), 1, "$what: the catalog is in db $db");
    $r->cmd('SELECT', 0);
    return $run;
}

sub refused {
    my ($addr, $re, $what, %env) = @_;
    my $run = run_agent(env => { APIMON_REDIS => $addr, APIMON_REDIS_PASSWORD => undef, %env },
        args => ['catalog', 'show']);
    is($run->{rc}, 2, "$what: exit 2");
    like($run->{err}, $re, "$what: says why");
    return $run;
}

applies_in("127.0.0.1:$port", 0, 'IPv4');
applies_in("localhost:$port", 0, 'host name');
SKIP: {
    skip 'no IPv6 loopback on this machine', 4 unless $ipv6;
    applies_in("[::1]:$port", 0, 'IPv6');
    applies_in("[::1]:$port db=2", 2, 'IPv6 with db=');
}
applies_in("unix:$sock", 0, 'unix:');
applies_in($sock, 0, 'a bare socket path');
applies_in("127.0.0.1:$port db=3", 3, 'db=3');
applies_in("  unix:$sock \t db=15 connect_timeout=2s ", 15, 'blanks, db=15, connect_timeout=');
my $run = applies_in(undef, 4, 'APIMON_REDIS (the environment) with db=',
    APIMON_REDIS => "127.0.0.1:$port db=4");

# requirepass: the connection of the harness stays authenticated
my $pw = 'pw-' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 24);
write_file("$dir/redis.password", "$pw\n");
write_file("$dir/wrong.password", "not-$pw\n");
write_file("$dir/empty.password", " \n");
write_file("$dir/long.password", 'x' x 1025);
$r->cmd('CONFIG', 'SET', 'requirepass', $pw);

applies_in("127.0.0.1:$port password_file=$dir/redis.password", 0, 'password_file=');
applies_in("unix:$sock db=5 password_file=$dir/redis.password", 5, 'unix:, db=, password_file=');
applies_in("127.0.0.1:$port", 0, 'APIMON_REDIS_PASSWORD', APIMON_REDIS_PASSWORD => $pw);
applies_in("127.0.0.1:$port password_file=$dir/redis.password", 0,
    'password_file= wins over APIMON_REDIS_PASSWORD', APIMON_REDIS_PASSWORD => 'other');

$run = refused("127.0.0.1:$port", qr/AUTH failed at 127\.0\.0\.1:$port: WRONGPASS/,
    'wrong password (environment)', APIMON_REDIS_PASSWORD => "not-$pw");
$run = refused("127.0.0.1:$port password_file=$dir/wrong.password",
    qr/AUTH failed at 127\.0\.0\.1:$port/, 'wrong password (file)');
unlike($run->{err} . $run->{out}, qr/\Q$pw\E/, 'wrong password: no password in the output');
refused("127.0.0.1:$port", qr/Redis PING failed at 127\.0\.0\.1:$port: NOAUTH/, 'no password');
refused("127.0.0.1:$port db=1", qr/Redis SELECT failed at 127\.0\.0\.1:$port: NOAUTH/,
    'no password, db=1');
refused("127.0.0.1:$port password_file=$dir/none", qr/password_file \Q$dir\E\/none: No such file/,
    'missing password file');
refused("127.0.0.1:$port password_file=$dir/empty.password", qr/is empty/, 'empty password file');
refused("127.0.0.1:$port password_file=$dir/long.password", qr/too long \(over 1024 bytes\)/,
    'password file too long');

# the second connection of a bill run (the batch's reads) takes the same form
$r->cmd('SELECT', 6);
$r->flushall;
setup_models($r);
$r->cmd('SELECT', 0);
$run = run_agent(env => { APIMON_REDIS => "unix:$sock db=6 password_file=$dir/redis.password",
                          APIMON_REDIS_PASSWORD => undef, STRIPE_API_KEY => undef },
    args => ['bill', '--period', '2026-01', '--dry-run', '--allow-unsafe-redis', '--batch', '2']);
is($run->{rc}, 0, 'bill --dry-run over unix:, db=6, password_file=: exit 0') or diag $run->{err};
like($run->{out}, qr{^POST /v1/invoiceitems\t}m, 'bill --dry-run: the lines of db 6');
$r->cmd('CONFIG', 'SET', 'requirepass', '');

# refusals of the address itself: before any connection
refused('::1', qr/an IPv6 address goes in brackets, \[::1\]:6379/, 'IPv6 without brackets');
refused("[::1:$port", qr/bad IPv6 address/, 'unclosed bracket');
refused('127.0.0.1:70000', qr/bad port in "127\.0\.0\.1:70000"/, 'port out of range');
refused("127.0.0.1:$port db=x", qr/invalid database number "db=x"/, 'db=x');
refused("127.0.0.1:$port db=1 db=2", qr/"db=" given twice/, 'db= twice');
refused("127.0.0.1:$port password=$pw", qr/unknown parameter/, 'password= is no parameter');
refused("127.0.0.1:$port connect_timeout=soon", qr/invalid connect timeout/, 'bad connect_timeout=');
refused('unix:' . ('/x' x 60), qr/longer than 107 bytes/, 'socket path too long');
refused('no-such-host.invalid:6379', qr/cannot connect to Redis at no-such-host\.invalid:6379/,
    'a name that does not resolve');
refused("unix:$dir/none.sock", qr/cannot connect to Redis at unix:\Q$dir\E\/none\.sock/,
    'no socket there');
$run = run_agent(env => { APIMON_REDIS => undef }, args => ['--redis', '', 'catalog', 'show']);
is($run->{rc}, 2, '--redis "": exit 2');
like($run->{err}, qr/empty Redis address/, '--redis "": says so');

# --version: the tree's one version
open my $vh, '<', 'ngx_http_apimon_module/ngx_http_apimon_version.h' or die $!;
my ($version) = join('', <$vh>) =~ /#define APIMON_VERSION\s+"([^"]+)"/;
$run = run_agent(args => ['--version']);
is($run->{rc}, 0, '--version: exit 0');
is($run->{out}, "billing-agent $version\n", "--version: billing-agent $version");
$run = run_agent(args => ['--help']);
like($run->{out}, qr/--version/, '--help names --version');
like($run->{out}, qr/password_file=/, '--help names the address parameters');

done_testing;
