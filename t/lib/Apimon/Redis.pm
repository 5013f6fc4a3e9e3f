package Apimon::Redis;

# Test harness for apimon: a private redis-server, a tiny RESP2 client, the
# domain scripts of schema/lua and the API key format of schema/README.md.
# Core Perl only.

=head1 NAME

Apimon::Redis - private Redis server, RESP2 client and apimon helpers for tests

=head1 SYNOPSIS

    use lib 't/lib';
    use Apimon::Redis;

    my $r = Apimon::Redis->start;              # private redis-server, free port
    $r->apply_catalog(Apimon::Redis::catalog_fixture());
    $r->put_developer('ann@example.com', { firstName => 'Ann' });
    my $s = $r->create_subscription(owner => 'ann@example.com',
                                    product => 'weather', plan => 'weather-bronze');
    my $c = $r->check(key => $s->{primary}, api => 'forecast');
    is($c->{result}, 'allowed');
    printf "redis on port %d\n", $r->port;

=head1 SERVER

=over

=item Apimon::Redis->start(%opts)

Starts C<redis-server> on 127.0.0.1 and a free port, in its own temporary
directory, C<--save ''>, not daemonized, as a forked child, and waits until it
answers PING. By default with apimon's persistence requirements: append-only
file in that directory (C<--appendonly yes --appendfsync everysec>, so
C<restart> keeps the data) and C<--maxmemory-policy noeviction>. Options:
C<aof =E<gt> 0> (Redis's own default instead: no append-only file, a restart
loses the data; what the persistence checks warn about), C<args =E<gt> [...]> (extra redis-server arguments),
C<server =E<gt> path> (default C<$ENV{APIMON_REDIS_SERVER}> or C<redis-server>),
C<timeout =E<gt> seconds> (client read timeout, default 5).
The server is stopped by C<stop>, when the object is destroyed, and at END
(also when the test dies); it also gets SIGKILL if the test process itself
is killed (Linux parent-death signal). Loading the module turns SIGINT,
SIGTERM and SIGHUP into a die (when they have no handler yet) so END runs.

=item Apimon::Redis->connect(port =E<gt> P, host =E<gt> '127.0.0.1')

A client only, for a server someone else runs. Server methods then die.

=item $r->port, $r->host, $r->dir (server's directory), $r->pid

=item $r->stop

SIGTERM (after SIGCONT), waits; SIGKILL after 5 s. Idempotent.

=item $r->kill_stop / $r->kill_cont

SIGSTOP / SIGCONT the server (to test timeouts while Redis hangs).

=item $r->restart

Stops and starts the server again on the same port and directory (data
survives only with C<aof =E<gt> 1>). The script cache is empty afterwards.

=back

=head1 CLIENT

=over

=item $r->cmd(@args)

Sends one command, returns the reply as Perl data: status and bulk strings as
strings, integers as numbers, nil as undef, arrays as array refs. B<An error
reply makes it die> with the error text followed by a newline (e.g.
C<"ERR apimon conflict: ...\n">); errors nested in arrays are
C<Apimon::Redis::Error> objects. Dies too on timeout or lost connection
(the next call reconnects).

=item $r->try_cmd(@args)

Like C<cmd> but returns an error reply as an C<Apimon::Redis::Error> object
(stringifies to the message; C<Apimon::Redis::is_error($v)> tests for one).

=item $r->timeout([seconds]), $r->disconnect, $r->flushall

=item Apimon::Redis::free_port() - a free TCP port on 127.0.0.1 (bind to port 0)

=item Apimon::Redis::is_error($v) - true for an C<Apimon::Redis::Error>

=back

=head1 SCRIPTS

=over

=item script_text($name) / script_sha($name)

The text of C<core.lua>, C<lib.lua> and C<E<lt>nameE<gt>.lua> (for C<check>: C<core.lua>,
C<calendar.lua> and C<check.lua>) from the repository's
C<schema/lua> (found relative to this file; C<$ENV{APIMON_LUA_DIR}> overrides),
and its SHA1. Functions, not methods (methods work too).

=item lua_dir() - the directory the scripts are read from

=item calendar_text() - C<core.lua> and C<calendar.lua>, the prelude of check: run a snippet after it to test C<rule_period>

=item $r->run_script($name, \@keys, \@argv)

EVALSHA, falling back to EVAL on NOSCRIPT. Dies on an error reply like
C<cmd>. C<$r-E<gt>try_script(...)> returns the error as an object instead.

=back

=head1 KEYS

=over

=item new_uuid() - random (v4) lowercase dashed UUID

=item new_key($sub_id) - a fresh 74-character API key (version 1, CRC-32) for that subscription

=item new_key_v2($sub_id, $secret) - a fresh 84-character API key (version 2) tagged under that secret

=item key_tag($first68, $secret) - the 16 base32 tag digits of a version 2 key

=item key_digest($key) - sha256 hex of the key (what Redis stores)

=item key_checksum($first67) - the 7 base32 checksum digits

=item key_valid($key [, $secret]) - 1 if the key has the right shape and checksum (version 1) or tag (version 2; without C<$secret> the shape only)

=item key_sub_id($key) - the dashed subscription id inside a key

=item sub_key($id) - C<apimon:sub:{id}>

=item ms_utc('2028-02-29T23:59:59.999') - ms since the epoch of a UTC instant (seconds and ms optional)

=item base32($bytes) - RFC 4648 lowercase, no padding

=back

=head1 PROVISIONING (all through the scripts)

C<now> defaults to 0 (Redis' clock) everywhere. Crafted instants should
be in the future: counter expiries are absolute, so counters written "in the
past" vanish at once. Replies that are JSON come back
decoded (hash refs). Error replies die (C<"ERR apimon E<lt>codeE<gt>: ...">).

=over

=item $r->apply_catalog($json_text [, $now]) - the new catalog version

=item $r->put_developer($email, \%fields [, mode =E<gt> 'create'|'update', now =E<gt> ms])

=item $r->put_appgroup($name, \%fields [, mode =E<gt> ..., now =E<gt> ...])

=item $r->set_customer($kind, $id, $customer [, $now])

=item $r->create_subscription(%o)

C<owner_kind> (default developer), C<owner>, C<product>, C<plan>, C<now>,
C<start> (startTime, 0 = now), C<id> (default new_uuid()),
C<secondary> (default 1: also make a secondary key). Returns
C<{ id, key =E<gt> 'apimon:sub:{id}', primary, secondary, reply =E<gt> decoded JSON }>.

=item $r->set_state($id, $action, %o) - C<now>, C<owner_kind>, C<owner> (default: no owner check); decoded JSON

=item $r->set_key($id, $slot, %o) - new key for slot primary|secondary (C<key> to choose it); returns the key

=item $r->view_subscription($id, %o) - C<now>, C<owner_kind>, C<owner>; decoded JSON

=item $r->billing_line($yyyymm, $field, $expected_state, $json_text [, $now]) - 1 or dies (conflict)

=item $r->check(%o)

Runs the C<check> script. C<key> (the API key; C<sub> overrides the id taken
from it), C<api>, C<now>, C<loc_rate =E<gt> [N, W]>, C<loc_quota =E<gt> [N, unit]>,
C<scope> (default C<loc>). Returns
C<{ result, id, plan, product, retry_after, windows =E<gt> [ {name, limit, window, remaining, reset}, ... ], raw =E<gt> [...], reply =E<gt> '...' }>:
C<raw> is the reply in the shape of the former array reply (result, id, plan,
product, retry-after, W, then W groups of 5), C<reply> the string itself.
Dies on an element error.

=item $r->check_batch([ \%o, ... ] [, $now])

One call of the check script for several requests (C<%o> as for C<check>,
C<digest> overrides the key's digest; equal locations are sent once); returns one hash per request as
C<check> does, or C<{ error }> for a request that failed alone.

=item parse_check($string) - one element of the check reply, decoded (function)

=item $r->quota_count($sub_key, $scope, $stamp)

The count of one quota period (C<$scope> C<plan> or C<loc.E<lt>scopeE<gt>>): the
C<c:quota:E<lt>scopeE<gt>> field of the subscription hash when it holds that
period, else the archived key C<E<lt>sub_keyE<gt>:quota:E<lt>scopeE<gt>:E<lt>stampE<gt>>; undef when neither.

=item $r->rate_tat($sub_key, $scope) - the stored GCRA TAT (microseconds) of a rate window, or undef

=item catalog_fixture() - a small catalog JSON text (function)

Products C<weather> [forecast, history] and C<maps> [tiles]. Plans:
C<weather-free> (free, 2/second, 100/day), C<weather-bronze> (flat 2900 usd,
5/second, 1000/month), C<weather-gold> (manual approval, graduated, 50/second,
100000/month), C<maps-basic> (metered, 10/minute, 500/week).

=back

=cut

use strict;
use warnings;
use Carp qw(croak);
use IO::Socket::IP;
use IO::Select;
use File::Temp qw(tempdir);
use File::Basename qw(dirname);
use File::Spec;
use POSIX qw(:sys_wait_h);
use Digest::SHA qw(sha1_hex sha256_hex hmac_sha256);
use Compress::Zlib qw(crc32);
use JSON::PP;
use Time::HiRes qw(time sleep);
use Config;

our %LIVE;    # pid => object data, for END cleanup

my $LUA_DIR = $ENV{APIMON_LUA_DIR}
    || File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..', '..', 'schema', 'lua'));
my $JSON = JSON::PP->new->canonical;

# ---------------------------------------------------------------- server

sub start {
    my ($class, %o) = @_;
    my $self = bless {
        host    => '127.0.0.1',
        dir     => tempdir('apimon-redis-XXXXXX', TMPDIR => 1, CLEANUP => 1),
        # apimon's persistence requirements by default (README, "Redis");
        # aof => 0 runs Redis's own default (RDB only) for tests of that
        aof     => (exists $o{aof} && !$o{aof}) ? 0 : 1,
        args    => $o{args} || [],
        server  => $o{server} || $ENV{APIMON_REDIS_SERVER} || 'redis-server',
        timeout => $o{timeout} || 5,
        owner   => $$,
    }, $class;
    $self->{port} = $o{port} || free_port();
    $self->_spawn;
    return $self;
}

sub connect {
    my ($class, %o) = @_;
    return bless { host => $o{host} || '127.0.0.1', port => $o{port},
                   timeout => $o{timeout} || 5 }, $class;
}

sub free_port {
    my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
                                Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or die "cannot bind a port: $@";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub _spawn {
    my ($self) = @_;
    my @argv = ($self->{server}, '--port', $self->{port}, '--bind', '127.0.0.1',
        '--dir', $self->{dir}, '--save', '', '--appendonly', $self->{aof} ? 'yes' : 'no',
        ($self->{aof} ? ('--appendfsync', 'everysec', '--maxmemory-policy', 'noeviction') : ()),
        '--daemonize', 'no', '--logfile', "$self->{dir}/redis.log",
        '--dbfilename', 'dump.rdb', @{ $self->{args} });
    my $parent = $$;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        # die with the test process, even on SIGKILL (prctl PR_SET_PDEATHSIG)
        eval { syscall(157, 1, 9) } if $Config{archname} =~ /^x86_64-linux/;
        POSIX::_exit(1) if getppid() != $parent;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$self->{dir}/redis.out";
        open STDERR, '>&', \*STDOUT;
        exec { $argv[0] } @argv or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    $LIVE{$pid} = $self->{owner};
    my $until = time + 10;
    while (time < $until) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $LIVE{$pid};
            delete $self->{pid};
            die "redis-server exited at start: " . _slurp("$self->{dir}/redis.log") . _slurp("$self->{dir}/redis.out");
        }
        my $ok = eval { $self->disconnect; $self->cmd('PING') eq 'PONG' };
        return 1 if $ok;
        sleep 0.02;
    }
    $self->stop;
    die "redis-server did not answer on port $self->{port}";
}

sub _slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    local $/;
    return <$fh>;
}

sub port { $_[0]{port} }
sub host { $_[0]{host} }
sub dir  { $_[0]{dir} }
sub pid  { $_[0]{pid} }

sub _need_server {
    my ($self) = @_;
    croak "no server started by this object" unless $self->{owner};
    croak "server not running" unless $self->{pid};
}

sub stop {
    my ($self) = @_;
    my $pid = $self->{pid} or return;
    return unless $self->{owner} && $self->{owner} == $$;
    $self->disconnect;
    delete $self->{pid};
    _reap($pid, 5) if delete $LIVE{$pid};    # else END already did
    return 1;
}

# SIGTERM (after SIGCONT, in case it was stopped), wait, SIGKILL after $grace s.
sub _reap {
    my ($pid, $grace) = @_;
    kill 'CONT', $pid;
    kill 'TERM', $pid;
    my $until = time + $grace;
    while ((my $w = waitpid($pid, WNOHANG)) == 0) {
        if (time > $until) { kill 'KILL', $pid; waitpid($pid, 0); last }
        sleep 0.01;
    }
}

sub kill_stop { my ($s) = @_; $s->_need_server; kill 'STOP', $s->{pid} }
sub kill_cont { my ($s) = @_; $s->_need_server; kill 'CONT', $s->{pid} }

sub restart {
    my ($self) = @_;
    croak "no server started by this object" unless $self->{owner};
    $self->stop;
    $self->_spawn;
    return $self;
}

sub DESTROY {
    my ($self) = @_;
    local ($@, $!, $?);
    $self->stop if $self->{pid};
}

END {
    local $?;
    for my $pid (keys %LIVE) {
        _reap($pid, 3) if delete($LIVE{$pid}) == $$;
    }
}

for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub { die "caught SIG$sig\n" } if !$SIG{$sig} || $SIG{$sig} eq 'DEFAULT';
}

# ---------------------------------------------------------------- client

package Apimon::Redis::Error;
use overload '""' => sub { $_[0]{message} }, fallback => 1;
sub new { bless { message => $_[1] }, $_[0] }
sub message { $_[0]{message} }

package Apimon::Redis;

sub is_error { ref($_[0]) && ref($_[0]) eq 'Apimon::Redis::Error' }

sub timeout {
    my ($self, $t) = @_;
    $self->{timeout} = $t if defined $t;
    return $self->{timeout};
}

sub disconnect {
    my ($self) = @_;
    close $self->{sock} if $self->{sock};
    delete $self->{sock};
    $self->{buf} = '';
}

sub _sock {
    my ($self) = @_;
    return $self->{sock} if $self->{sock};
    my $s = IO::Socket::IP->new(PeerHost => $self->{host}, PeerPort => $self->{port},
                                Proto => 'tcp', Timeout => $self->{timeout})
        or die "cannot connect to redis $self->{host}:$self->{port}: $@\n";
    binmode $s;
    $self->{buf} = '';
    return $self->{sock} = $s;
}

sub _encode {
    my $out = '*' . scalar(@_) . "\r\n";
    for my $a (@_) {
        my $v = defined $a ? "$a" : '';
        utf8::encode($v) if utf8::is_utf8($v);
        $out .= '$' . length($v) . "\r\n$v\r\n";
    }
    return $out;
}

sub _fill {
    my ($self) = @_;
    my $sel = IO::Select->new($self->{sock});
    unless ($sel->can_read($self->{timeout})) {
        $self->disconnect;
        die "redis read timeout after $self->{timeout} s\n";
    }
    my $n = sysread($self->{sock}, my $chunk, 65536);
    if (!$n) {
        $self->disconnect;
        die "redis connection lost\n";
    }
    $self->{buf} .= $chunk;
}

sub _line {
    my ($self) = @_;
    my $i;
    $self->_fill while ($i = index($self->{buf}, "\r\n")) < 0;
    my $l = substr($self->{buf}, 0, $i);
    substr($self->{buf}, 0, $i + 2, '');
    return $l;
}

sub _read {
    my ($self) = @_;
    my $l = $self->_line;
    my ($t, $rest) = (substr($l, 0, 1), substr($l, 1));
    return $rest if $t eq '+';
    return Apimon::Redis::Error->new($rest) if $t eq '-';
    return 0 + $rest if $t eq ':';
    if ($t eq '$') {
        return undef if $rest < 0;
        $self->_fill while length($self->{buf}) < $rest + 2;
        my $v = substr($self->{buf}, 0, $rest);
        substr($self->{buf}, 0, $rest + 2, '');
        return $v;
    }
    if ($t eq '*') {
        return undef if $rest < 0;
        return [ map { $self->_read } 1 .. $rest ];
    }
    $self->disconnect;
    die "redis protocol error: $l\n";
}

sub try_cmd {
    my ($self, @args) = @_;
    my $s = $self->_sock;
    my $req = _encode(@args);
    my $ok = eval {
        local $SIG{PIPE} = 'IGNORE';
        while (length $req) {
            my $n = syswrite($s, $req);
            die "redis write failed: $!\n" unless defined $n;
            substr($req, 0, $n, '');
        }
        1;
    };
    unless ($ok) { my $e = $@; $self->disconnect; die $e }
    return $self->_read;
}

sub cmd {
    my $self = shift;
    my $v = $self->try_cmd(@_);
    die $v->message . "\n" if is_error($v);
    return $v;
}

sub flushall { $_[0]->cmd('FLUSHALL') }

# ---------------------------------------------------------------- scripts

my %TEXT;

sub script_text {
    my $name = pop;
    return $TEXT{$name} //= _lua_files(script_parts($name));
}

sub script_sha { sha1_hex(script_text(pop)) }

# the files a script is made of (schema/embed.sh does the same)
sub script_parts {
    my $name = pop;
    return $name eq 'check' ? ('core', 'calendar', 'check') : ('core', 'lib', $name);
}

# the text of these schema/lua files, one after the other
sub _lua_files {
    my $t = '';
    for my $f (@_) {
        open my $fh, '<:raw', "$LUA_DIR/$f.lua" or croak "cannot read $LUA_DIR/$f.lua: $!";
        local $/;
        $t .= <$fh>;
    }
    return $t;
}

# core.lua + lib.lua: the prelude of every script but check
sub lib_text { _lua_files('core', 'lib') }

# core.lua + calendar.lua: the prelude of check (rule periods)
sub calendar_text { _lua_files('core', 'calendar') }

sub lua_dir { $LUA_DIR }

sub try_script {
    my ($self, $name, $keys, $argv) = @_;
    $keys ||= [];
    $argv ||= [];
    my @rest = (scalar(@$keys), @$keys, @$argv);
    my $v = $self->try_cmd('EVALSHA', script_sha($name), @rest);
    if (is_error($v) && $v->message =~ /^NOSCRIPT/) {
        $v = $self->try_cmd('EVAL', script_text($name), @rest);
    }
    return $v;
}

sub run_script {
    my $self = shift;
    my $v = $self->try_script(@_);
    die $v->message . "\n" if is_error($v);
    return $v;
}

# ---------------------------------------------------------------- keys

my @B32 = split //, 'abcdefghijklmnopqrstuvwxyz234567';

sub _random {
    my ($n) = @_;
    open my $fh, '<:raw', '/dev/urandom' or die "/dev/urandom: $!";
    my $got = read($fh, my $b, $n);
    die "short read from /dev/urandom" unless $got && $got == $n;
    return $b;
}

sub base32 {
    my $bits = unpack('B*', pop);
    $bits .= '0' x ((5 - length($bits) % 5) % 5);
    return join '', map { $B32[oct "0b$_"] } $bits =~ /(.{5})/g;
}

sub new_uuid {
    my @b = unpack('C16', _random(16));
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    my $h = join '', map { sprintf '%02x', $_ } @b;
    return join '-', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4),
                     substr($h, 16, 4), substr($h, 20, 12);
}

sub key_checksum {
    my $c = crc32(pop);
    return join '', map { $B32[($c >> (5 * $_)) & 31] } reverse 0 .. 6;
}

sub new_key {
    my $id = pop;
    (my $hex = lc $id) =~ tr/-//d;
    croak "bad subscription id $id" unless $hex =~ /^[0-9a-f]{32}$/;
    my $k = 'ak_' . $hex . base32(_random(20));
    return $k . key_checksum($k);
}

sub key_tag {
    my ($first68, $secret) = @_;
    return base32(substr(hmac_sha256($first68, $secret), 0, 10));
}

sub new_key_v2 {
    my ($id, $secret) = @_;
    (my $hex = lc $id) =~ tr/-//d;
    croak "bad subscription id $id" unless $hex =~ /^[0-9a-f]{32}$/;
    my $k = 'ak2_' . $hex . base32(_random(20));
    return $k . key_tag($k, $secret);
}

sub key_valid {
    my ($k, $secret) = @_;
    return 0 unless defined $k;
    if ($k =~ /^ak2_[0-9a-f]{32}[a-z2-7]{32}([a-z2-7]{16})$/) {
        return 1 unless defined $secret;
        return key_tag(substr($k, 0, 68), $secret) eq $1 ? 1 : 0;
    }
    return 0 unless $k =~ /^ak_[0-9a-f]{32}[a-z2-7]{32}([a-z2-7]{7})$/;
    return key_checksum(substr($k, 0, 67)) eq $1 ? 1 : 0;
}

sub key_sub_id {
    my $k = pop;
    my $h = substr($k, $k =~ /^ak2_/ ? 4 : 3, 32);
    return join '-', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4),
                     substr($h, 16, 4), substr($h, 20, 12);
}

sub key_digest { sha256_hex(pop) }

sub sub_key { 'apimon:sub:{' . pop() . '}' }

sub ms_utc {
    my $t = pop;
    my ($y, $mo, $d, $h, $mi, $s, $ms) =
        $t =~ /^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,3}))?)?)?Z?$/
        or croak "bad time $t";
    require Time::Local;
    my $sec = Time::Local::timegm($s // 0, $mi // 0, $h // 0, $d, $mo - 1, $y);
    $ms = defined $ms ? substr($ms . '00', 0, 3) : 0;
    return $sec * 1000 + $ms;
}

# ---------------------------------------------------------------- provisioning

sub _json { $JSON->decode($_[0]) }

sub apply_catalog {
    my ($self, $text, $now) = @_;
    return $self->run_script('catalog_apply', [], [ $text, $now || 0 ]);
}

# The leading arguments of every management script (schema/lua/lib.lua):
# now, who, addr, owner kind, owner; the script's own arguments follow.
sub mgmt_args {
    my (%o) = @_;
    return ($o{now} || 0, $o{who} // '', $o{addr} // '', $o{owner_kind} // '', $o{owner} // '');
}

sub _put_owner {
    my ($self, $kind, $id, $fields, %o) = @_;
    return _json($self->run_script('owner_put', [],
        [ mgmt_args(now => $o{now}, owner_kind => $kind, owner => $id),
          $JSON->encode($fields || {}), $o{mode} || 'create' ]));
}

sub put_developer { my $s = shift; $s->_put_owner('developer', @_) }
sub put_appgroup  { my $s = shift; $s->_put_owner('appgroup', @_) }

sub set_customer {
    my ($self, $kind, $id, $cus, $now) = @_;
    return _json($self->run_script('customer_set', [], [ $kind, $id, $cus, $now || 0 ]));
}

sub create_subscription {
    my ($self, %o) = @_;
    my $id = $o{id} || new_uuid();
    my $p  = new_key($id);
    my $s  = (exists $o{secondary} && !$o{secondary}) ? '' : new_key($id);
    my $reply = $self->run_script('subscription_create', [ sub_key($id) ],
        [ mgmt_args(now => $o{now}, owner_kind => $o{owner_kind} || 'developer', owner => $o{owner}),
          $id, $o{product}, $o{plan}, key_digest($p), $s eq '' ? '' : key_digest($s), $o{start} || 0 ]);
    return { id => $id, key => sub_key($id), primary => $p, secondary => $s,
             reply => _json($reply) };
}

sub set_state {
    my ($self, $id, $action, %o) = @_;
    return _json($self->run_script('subscription_state', [ sub_key($id) ],
        [ mgmt_args(%o), $action ]));
}

sub set_key {
    my ($self, $id, $slot, %o) = @_;
    my $k = $o{key} // new_key($id);
    $self->run_script('subscription_key', [ sub_key($id) ],
        [ mgmt_args(%o), $slot, $k eq '' ? '' : key_digest($k) ]);
    return $k;
}

sub view_subscription {
    my ($self, $id, %o) = @_;
    return _json($self->run_script('subscription_view', [ sub_key($id) ],
        [ mgmt_args(%o) ]));
}

sub billing_line {
    my ($self, $period, $field, $expected, $json, $now) = @_;
    return $self->run_script('billing_line', [ "apimon:bill:$period" ],
        [ $field, $expected // '', $json, $now || 0 ]);
}

sub check {
    my ($self, %o) = @_;
    my $v = $self->check_batch([ \%o ], $o{now});
    die $v->[0]{error} . "\n" if $v->[0]{error};
    return $v->[0];
}

# The check's layout (schema/README.md, "The check's layout"): arguments
# per location, fields of a reply element before its windows, per window.
my ($CHECK_LOC_ARGS, $CHECK_REPLY_HEAD, $CHECK_WINDOW_FIELDS) = (6, 5, 5);

# The check script for several requests in one call (what nginx sends);
# $bid, when given, is the batch id "<worker>:<slot>:<seq>" (check_refund).
sub check_batch {
    my ($self, $list, $now, $bid) = @_;
    my (@keys, @argv, @locs, %loc);
    for my $o (@$list) {
        my $id = $o->{sub} // key_sub_id($o->{key});
        my $lr = $o->{loc_rate} || [ 0, 0 ];
        my $lq = $o->{loc_quota} || [ 0, '' ];
        # the locations are listed once, requests refer to them by number
        my @l = ($o->{api}, @$lr, @$lq, $o->{scope} // 'loc');
        my $sig = join "\0", @l;
        unless ($loc{$sig}) {
            push @locs, @l;
            $loc{$sig} = @locs / $CHECK_LOC_ARGS;
        }
        push @keys, sub_key($id);
        push @argv, $o->{digest} // key_digest($o->{key}), $loc{$sig};
    }
    my $v = $self->run_script('check', \@keys, [ $now || 0, @locs / $CHECK_LOC_ARGS, @locs, @argv,
                                                 defined $bid ? ($bid) : () ]);
    return [ map { parse_check($_) } @$v ];
}

# One element of the check reply: "result|id|plan|product|retry" then
# "|name|limit|window|remaining|reset" per window, or "!error".
sub parse_check {
    my $s = pop;
    return { error => substr($s, 1), reply => $s } if $s =~ /^!/;
    my @f = split /\|/, $s, -1;
    my @w = @f[ $CHECK_REPLY_HEAD .. $#f ];
    my (@win, @flat);
    while (my @g = splice @w, 0, $CHECK_WINDOW_FIELDS) {
        push @win, { name => $g[0], limit => $g[1], window => $g[2], remaining => $g[3], reset => $g[4] };
        push @flat, @g;
    }
    return { result => $f[0], id => $f[1], plan => $f[2], product => $f[3],
             retry_after => $f[4], windows => \@win,
             raw => [ @f[ 0 .. $CHECK_REPLY_HEAD - 1 ], scalar(@win), @flat ], reply => $s };
}

# Window state of the check script (schema/README.md): the count of one
# quota period, from the subscription hash while it is the latest period
# counted there, else from its archived stamped key (undef: none).
sub quota_count {
    my ($self, $skey, $scope, $stamp) = @_;
    my $v = $self->cmd('HGET', $skey, "c:quota:$scope") // '';
    my ($st, $c) = $v =~ /^[a-z]+:(\d+):\d+:\d+:(\d+)$/;
    return $c if defined $st && $st eq $stamp;
    return $self->cmd('GET', "$skey:quota:$scope:$stamp");
}

# the GCRA theoretical arrival time (ms) of one rate window, or undef
sub rate_tat {
    my ($self, $skey, $scope) = @_;
    return $self->cmd('HGET', $skey, "c:rate:$scope");
}

sub catalog_fixture {
    return <<'JSON';
{
  "products": [
    { "name": "weather", "displayName": "Weather API", "description": "Forecasts and history",
      "apis": ["forecast", "history"] },
    { "name": "maps", "displayName": "Maps API", "description": "Map tiles",
      "apis": ["tiles"] }
  ],
  "plans": [
    { "name": "weather-free", "product": "weather", "displayName": "Free",
      "approval": "auto",
      "rateLimit": { "limit": 2, "per": "second" },
      "quota": { "limit": 100, "period": "day" },
      "pricing": { "model": "free" } },
    { "name": "weather-bronze", "product": "weather", "displayName": "Bronze",
      "approval": "auto",
      "rateLimit": { "limit": 5, "per": "second" },
      "quota": { "limit": 1000, "period": "month" },
      "pricing": { "model": "flat", "currency": "usd", "amount": 2900 } },
    { "name": "weather-gold", "product": "weather", "displayName": "Gold",
      "approval": "manual",
      "rateLimit": { "limit": 50, "per": "second" },
      "quota": { "limit": 100000, "period": "month" },
      "pricing": { "model": "graduated", "currency": "usd", "unitSize": 1000,
                   "tiers": [ { "upTo": 10000, "unitAmount": 50, "flatAmount": 0 },
                              { "upTo": null, "unitAmount": 20, "flatAmount": 0 } ] } },
    { "name": "maps-basic", "product": "maps", "displayName": "Maps Basic",
      "approval": "auto",
      "rateLimit": { "limit": 10, "per": "minute" },
      "quota": { "limit": 500, "period": "week" },
      "pricing": { "model": "metered", "currency": "usd", "unitAmount": 1, "unitSize": 10 } }
  ]
}
JSON
}

1;
