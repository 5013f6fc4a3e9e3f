#!/usr/bin/perl
# The test harness itself: private redis-server lifecycle, RESP client, API
# key format, script loading and the embedded header (schema/embed.sh).
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use Digest::SHA qw(sha1_hex sha256_hex);
use Compress::Zlib qw(crc32);
use Time::HiRes qw(time sleep);
use POSIX ();
use Config;
use Apimon::Redis;

my $root = "$FindBin::Bin/..";

sub alive { my $pid = shift; return kill(0, $pid) && _state($pid) ne "Z" }
sub _state { my $pid = shift; open my $fh, '<', "/proc/$pid/stat" or return 'gone'; my @f = split ' ', scalar <$fh>; return $f[2] }
sub gone_within {
    my ($pid, $s) = @_;
    my $t0 = time;
    while (time < $t0 + $s) {
        # reap it if it is ours (directly, or orphaned to us: subreaper below)
        my $w = waitpid($pid, POSIX::WNOHANG());
        return 1 if $w == $pid || !kill(0, $pid);
        return 1 if $w == -1 && _state($pid) eq 'Z' && time > $t0 + 0.5;
        sleep 0.05;
    }
    return 0;
}

# --- server and client
my $r = Apimon::Redis->start(aof => 0);
ok($r->port > 0, 'port ' . $r->port);
is($r->cmd('PING'), 'PONG', 'PING');
is($r->cmd('SET', 'a', "bin\r\n\0x"), 'OK', 'status reply');
is($r->cmd('GET', 'a'), "bin\r\n\0x", 'binary-safe bulk');
is($r->cmd('GET', 'nope'), undef, 'nil');
is($r->cmd('INCR', 'n'), 1, 'integer');
is_deeply($r->cmd('MGET', 'n', 'nope'), [ '1', undef ], 'array with nil');
my $e = eval { $r->cmd('INCR', 'a'); 1 } ? '' : $@;
like($e, qr/^ERR value is not an integer/, 'cmd dies with the error text');
my $v = $r->try_cmd('INCR', 'a');
ok(Apimon::Redis::is_error($v), 'try_cmd returns an error object');
like("$v", qr/^ERR /, 'error object stringifies');
is_deeply($r->cmd('HGETALL', 'nope'), [], 'empty array');

# restart without AOF loses data, port unchanged
my $port = $r->port;
$r->restart;
is($r->port, $port, 'restart keeps the port');
is($r->cmd('GET', 'n'), undef, 'no AOF: data gone after restart');

# SIGSTOP makes the client time out, SIGCONT brings it back
$r->timeout(0.3);
$r->kill_stop;
my $t0 = time;
ok(!eval { $r->cmd('PING'); 1 }, 'stopped server: command fails');
like($@, qr/timeout/, 'read timeout');
cmp_ok(time - $t0, '<', 2, 'timeout is prompt');
$r->kill_cont;
$r->timeout(5);
is($r->cmd('PING'), 'PONG', 'continues after SIGCONT (reconnects)');

my $pid = $r->pid;
$r->stop;
ok(gone_within($pid, 2), 'stop ends redis-server');
undef $r;

# AOF keeps data across restart
my $ra = Apimon::Redis->start(aof => 1);
$ra->cmd('SET', 'kept', 'yes');
$ra->restart;
is($ra->cmd('GET', 'kept'), 'yes', 'AOF: data survives restart');
$pid = $ra->pid;
undef $ra;
ok(gone_within($pid, 2), 'DESTROY ends redis-server');

# a test that dies, or is SIGKILLed, leaves no redis-server behind. Become a
# subreaper (prctl PR_SET_CHILD_SUBREAPER) so the orphaned server is reaped here.
syscall(157, 36, 1) if $Config{archname} =~ /^x86_64-linux/;
for my $how ('die', 'kill') {
    my $code = q{use Apimon::Redis; $| = 1; close STDERR; my $r = Apimon::Redis->start; print $r->pid, "\n"; }
             . ($how eq 'die' ? q{die "boom\n"} : q{sleep 30});
    my $cpid = open(my $fh, '-|', $^X, "-I$FindBin::Bin/lib", '-e', $code) or die "spawn: $!";
    my $rpid = <$fh>;
    chomp $rpid if defined $rpid;
    ok($rpid && $rpid =~ /^\d+$/, "$how: child started redis $rpid");
    kill 'KILL', $cpid if $how eq 'kill';
    { local $SIG{__WARN__} = sub {}; close $fh }
    ok(gone_within($rpid, 3), "$how: redis-server gone");
}

# --- API keys
is(Apimon::Redis::base32('foobar'), 'mzxw6ytboi', 'base32 RFC 4648 vector, lowercase, unpadded');
is(Apimon::Redis::base32(''), '', 'base32 of nothing');
my $id = Apimon::Redis::new_uuid();
like($id, qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, "uuid $id");
isnt(Apimon::Redis::new_uuid(), $id, 'uuids differ');
my $k = Apimon::Redis::new_key($id);
is(length $k, 74, 'key is 74 characters');
(my $hex = $id) =~ tr/-//d;
like($k, qr/^ak_\Q$hex\E[a-z2-7]{32}[a-z2-7]{7}$/, 'key shape');
# checksum recomputed independently: 35-bit big-endian binary cut in fives
my $bits = sprintf '%035b', crc32(substr($k, 0, 67));
my $sum = join '', map { ('a' .. 'z', 2 .. 7)[oct "0b$_"] } $bits =~ /(.{5})/g;
is(substr($k, 67), $sum, 'checksum = CRC-32 of the first 67 chars in 7 base32 digits');
like(substr($k, 67, 1), qr/^[a-d]$/, 'top 3 checksum bits are zero');
ok(Apimon::Redis::key_valid($k), 'key_valid');
my $bad = $k;
substr($bad, 40, 1) = substr($bad, 40, 1) eq 'a' ? 'b' : 'a';
ok(!Apimon::Redis::key_valid($bad), 'one changed character breaks the checksum');
ok(!Apimon::Redis::key_valid(substr($k, 0, 73)), 'short key invalid');
isnt(Apimon::Redis::new_key($id), $k, 'keys are random');
is(Apimon::Redis::key_sub_id($k), $id, 'key_sub_id');
is(Apimon::Redis::key_digest($k), sha256_hex($k), 'digest is sha256 hex');
like(Apimon::Redis::key_digest($k), qr/^[0-9a-f]{64}$/, 'digest shape');
is(Apimon::Redis::sub_key($id), "apimon:sub:{$id}", 'sub_key');
is(Apimon::Redis::ms_utc('2028-02-29T23:59:59.999'), 1835481599999, 'ms_utc');

# --- scripts: EVALSHA with NOSCRIPT fallback, and the embedded header
$r = Apimon::Redis->start;
my @ops = map { m{/([a-z_]+)\.lua$} ? $1 : () } glob("$root/schema/lua/*.lua");
@ops = grep { $_ ne 'lib' && $_ ne 'core' && $_ ne 'calendar' } @ops;   # the preludes
for my $op (qw(check catalog_apply owner_put customer_set subscription_create subscription_state
               subscription_key subscription_view billing_line)) {
    ok((grep { $_ eq $op } @ops), "script $op exists");
}
$r->cmd('SCRIPT', 'FLUSH');
is($r->cmd('SCRIPT', 'EXISTS', Apimon::Redis::script_sha('catalog_apply'))->[0], 0, 'not cached');
is($r->apply_catalog(Apimon::Redis::catalog_fixture()), 1, 'run_script falls back to EVAL on NOSCRIPT');
is($r->cmd('SCRIPT', 'EXISTS', Apimon::Redis::script_sha('catalog_apply'))->[0], 1, 'now cached');

my $dir = tempdir(CLEANUP => 1);
my $h = "$dir/x.h";
is(system('sh', "$root/schema/embed.sh", "$root/schema/lua", $h), 0, 'embed.sh runs');
open my $fh, '<', $h or die "$h: $!";
my $hdr = do { local $/; <$fh> };
close $fh;
for my $op (@ops) {
    my $up = uc $op;
    my ($sha) = $hdr =~ /#define APIMON_SCRIPT_${up}_SHA1 "([0-9a-f]{40})"/;
    my $text = Apimon::Redis::script_text($op);
    like($text, qr/\n\z/, "$op text ends with a newline");
    is($sha, sha1_hex($text), "$op: header SHA1 = sha1(core.lua [+ lib.lua | + calendar.lua] + $op.lua)");
    is($r->cmd('SCRIPT', 'LOAD', $text), $sha, "$op: SHA1 = SCRIPT LOAD answer");
    my ($body) = $hdr =~ /static const char apimon_script_${op}_text\[\] =\n(.*?)\n    ;\n/s;
    my $c = join '', map { /^    "(.*)"$/ ? $1 : die "bad line $_" } split /\n/, $body // '';
    $c =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
    is($c, $text, "$op: embedded C string is the exact text");
    my ($len) = $hdr =~ /#define APIMON_SCRIPT_${up}_LEN (\d+)/;
    is($len, length($text), "$op: length");
}

done_testing;
