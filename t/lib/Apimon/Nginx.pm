package Apimon::Nginx;

# Test harness for apimon: a private nginx with the built module, on
# 127.0.0.1 and free ports, in its own prefix directory. Core Perl only.

=head1 NAME

Apimon::Nginx - start nginx with the apimon module for a test

=head1 SYNOPSIS

    use lib 't/lib';
    use Apimon::Redis;
    use Apimon::Nginx;

    my $r = Apimon::Redis->start;
    my $n = Apimon::Nginx->new;
    $n->start(redis => $r, server => <<'CONF');
        location /weather/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }
    CONF
    my $res = $n->get('/weather/today', 'X-API-Key' => $key);
    is($res->{status}, 200);
    $n->stop;          # graceful quit; fails the test on [alert]/[crit]/[emerg]

=head1 METHODS

=over

=item Apimon::Nginx->new(%o)

Makes the prefix directory (a temporary directory, removed at exit). Options:
C<workers> (default 2). Nothing runs yet.

=item $n->prefix, $n->conf_file, $n->error_log_file, $n->access_log_file

=item $n->key_secret

The key secret of the instance's C<apimon_key_secret_file> (keys of version 2
are tagged under it: C<Apimon::Redis::new_key_v2($id, $n-E<gt>key_secret)>).

=item $n->port($name)

A free TCP port on 127.0.0.1, the same one for the same name. C<http> is the
port of the main server, C<backend> the one of the built-in upstream.

=item $n->http_port, $n->url($path)

=item $n->start(%o)

Writes nginx.conf and starts nginx (C<daemon off>, master process, in the
background) and waits until it accepts connections. Dies with nginx's own
message (stderr) when it does not start, e.g. for a bad directive. Options:

C<redis> an Apimon::Redis (adds C<apimon_redis 127.0.0.1:PORT;>),
C<redis_conf> the C<apimon_redis> line to use instead (or C<''> for none),
C<http> text added to the http block, C<server> text added to the main server
block (which listens on C<http_port>), C<main> text added at top level,
C<log_format> the access log format (default: C<$uri $status $apimon_result
$apimon_subscription $apimon_plan $apimon_product $apimon_quota_remaining
$apimon_rate_remaining>), C<key_secret> the text of the file that
C<apimon_key_secret_file conf/key.secret;> (always in the http block) names:
default a random secret made once per instance (see C<key_secret>), C<undef>
for no such line (keys of version 1 only, as without the directive).

The http block always holds C<upstream backend> and its server on
C<port('backend')>, which answers every request with 200 and a text body:

    backend uri=$uri args=$args key=$http_x_api_key

=item $n->reload(%o)

Rewrites nginx.conf when options are given (same as C<start>), sends SIGHUP
and waits until the new worker processes run. Returns 1, or 0 when nginx
refused the new configuration (the old one keeps running).

=item $n->stop

Graceful quit (SIGQUIT), waits for the exit (SIGKILL after 20 s), then fails
the test if the error log holds an C<[alert]>, C<[crit]> or C<[emerg]> line
(or, under valgrind, if valgrind reported an error). Idempotent; also run at
exit for instances still running.

=item $n->kill_now

SIGKILL, no checks (for tests that leave nginx in a state of their own).

=item $n->request($method, $path, %o)

An HTTP request through HTTP::Tiny. C<headers> (hash ref), C<content>,
C<timeout> (default 10). Returns C<{ status, headers, content, json, ms }>:
C<json> is the decoded body when it is JSON (problem+json too), C<ms> the
elapsed time. Status 599 is HTTP::Tiny's own (connection failed).

=item $n->get($path, %headers)

=item $n->error_log, $n->access_log - their text

=item $n->alerts - the [alert]/[crit]/[emerg] lines of the error log

but those matching C<$n-E<gt>{expected_alerts}> (a regex a test sets, e.g. for
the worker it killed itself)

=item $n->pids - master and worker pids

=item $n->valgrind - true when running under valgrind (C<APIMON_VALGRIND=1>)

=back

=head1 FUNCTIONS

=over

=item enforcement_catalog() - a catalog JSON text for the enforcement tests

Products C<weather> [forecast, history] and C<maps> [tiles]. Plans (all free):
C<open> (weather, no limit), C<small> (weather, quota 3 per day), C<slow>
(weather, 2 per second), C<hourly> (weather, 1 per hour), C<maps> (maps, no
limit), C<manual> (weather, manual approval, no limit).

=item subscribe($redis, $plan, %o) - a subscription of C<dev@example.com>
(created on first use) to that plan; the hash of C<create_subscription>.

=back

=head1 ENVIRONMENT

C<APIMON_BUILD> (default: C<build/> of the repository) holds
C<ngx_http_apimon_module.so>. C<APIMON_MODULE_CONF>, when set, is included
instead of the C<load_module> line of that file: the installed package's
C<APIMON_MODULE_CONF='/etc/nginx/modules-enabled/*.conf'> (what C<.ci/run>
does after installing the packages); the prefix then has C<modules/> linked
to C</usr/lib/nginx/modules>, as Debian's C</usr/share/nginx> has. C<APIMON_NGINX> is the nginx binary (default
C<nginx>). With C<APIMON_VALGRIND=1> nginx runs under valgrind (the workers,
forked, stay under it), and C<stop> fails the test on any valgrind error or
definite leak in any process (reports in C<logs/valgrind.PID.log> of the
prefix; suppressions in C<t/valgrind.supp>).

=cut

use strict;
use warnings;
use Carp qw(croak);
use File::Temp qw(tempdir);
use File::Basename qw(dirname);
use File::Spec;
use IO::Socket::IP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use HTTP::Tiny;
use JSON::PP;
use Test::More ();

our %LIVE;

my $REPO = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..', '..'));
my $BUILD = $ENV{APIMON_BUILD} || File::Spec->catdir($REPO, 'build');
my $NGINX = $ENV{APIMON_NGINX} || 'nginx';
my $VALGRIND = $ENV{APIMON_VALGRIND} ? 1 : 0;

sub new {
    my ($class, %o) = @_;
    my $self = bless {
        prefix  => tempdir('apimon-nginx-XXXXXX', TMPDIR => 1, CLEANUP => 1),
        workers => $o{workers} // 2,
        ports   => {},
        conf    => {},
        owner   => $$,
    }, $class;
    # as root, the workers run as "nobody": they must read files under it
    chmod 0755, $self->{prefix};
    mkdir "$self->{prefix}/$_" for qw(logs tmp conf);
    # a load file's "modules/..." is relative to the prefix: Debian's
    # prefix links modules/ to /usr/lib/nginx/modules, and so does this one
    symlink '/usr/lib/nginx/modules', "$self->{prefix}/modules" if $ENV{APIMON_MODULE_CONF};
    return $self;
}

sub prefix          { $_[0]{prefix} }
sub conf_file       { "$_[0]{prefix}/conf/nginx.conf" }
sub error_log_file  { "$_[0]{prefix}/logs/error.log" }
sub access_log_file { "$_[0]{prefix}/logs/access.log" }
sub valgrind        { $VALGRIND }
sub module_file     { File::Spec->catfile($BUILD, 'ngx_http_apimon_module.so') }

sub port {
    my ($self, $name) = @_;
    return $self->{ports}{$name} //= free_port($self);
}

sub http_port { $_[0]->port('http') }

sub key_secret {
    my ($self) = @_;
    return $self->{key_secret} //= join '', map { sprintf '%02x', int rand 256 } 1 .. 32;
}
sub url       { 'http://127.0.0.1:' . $_[0]->http_port . ($_[1] // '/') }

sub free_port {
    my ($self) = @_;
    my %taken = map { $_ => 1 } grep { defined } values %{ $self && ref $self ? $self->{ports} : {} };
    for (1 .. 50) {
        my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
                                    Proto => 'tcp', Listen => 1, ReuseAddr => 0)
            or next;
        my $p = $s->sockport;
        close $s;
        return $p unless $taken{$p};
    }
    croak "no free port";
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    my $t = <$fh>;
    return $t // '';
}

sub _write {
    my ($file, $text) = @_;
    open my $fh, '>', $file or croak "$file: $!";
    print $fh $text;
    close $fh or croak "$file: $!";
}

sub _config {
    my ($self, %o) = @_;
    my $p = $self->{prefix};
    my $module = $self->module_file;
    my $load = "load_module $module;";
    if ($ENV{APIMON_MODULE_CONF}) {
        $load = "include $ENV{APIMON_MODULE_CONF};";
    } else {
        croak "$module is missing: run make module" unless -f $module;
    }

    my $redis = '';
    if (exists $o{redis_conf}) {
        $redis = $o{redis_conf} // '';
    } elsif ($o{redis}) {
        $redis = 'apimon_redis 127.0.0.1:' . $o{redis}->port . ';';
    }

    my $secret = '';
    if (!exists $o{key_secret} || defined $o{key_secret}) {
        $self->{key_secret} = $o{key_secret} // $self->key_secret;
        _write("$p/conf/key.secret", "$self->{key_secret}\n");
        $secret = "apimon_key_secret_file $p/conf/key.secret;";
    }

    my $log_format = $o{log_format} // '$uri $status $apimon_result '
        . '$apimon_subscription $apimon_plan $apimon_product '
        . '$apimon_quota_remaining $apimon_rate_remaining';

    my $process = "master_process on;\nworker_processes $self->{workers};\n";

    my $http_port = $self->http_port;
    my $backend = $self->port('backend');
    my $main = $o{main} // '';
    my $http = $o{http} // '';
    my $server = $o{server} // '';

    return <<"CONF";
$load

daemon off;
${process}pid $p/logs/nginx.pid;
error_log $p/logs/error.log debug;
$main

events {
    worker_connections 1024;
}

http {
    client_body_temp_path $p/tmp/body;
    proxy_temp_path $p/tmp/proxy;
    fastcgi_temp_path $p/tmp/fastcgi;
    uwsgi_temp_path $p/tmp/uwsgi;
    scgi_temp_path $p/tmp/scgi;

    log_format apimon_test '$log_format';
    access_log $p/logs/access.log apimon_test;

    $redis
    $secret

    upstream backend {
        server 127.0.0.1:$backend;
        keepalive 8;
    }

    server {
        listen 127.0.0.1:$backend;
        access_log off;

        location / {
            return 200 "backend uri=\$uri args=\$args key=\$http_x_api_key\\n";
        }
    }

$http

    server {
        listen 127.0.0.1:$http_port;
        server_name localhost;

$server
    }
}
CONF
}

sub start {
    my ($self, %o) = @_;
    croak "nginx is already running" if $self->{pid};
    $self->{conf} = {%o};
    _write($self->conf_file, $self->_config(%o));

    my $stderr = "$self->{prefix}/logs/stderr.log";
    my @cmd = ($NGINX, '-p', "$self->{prefix}/", '-c', $self->conf_file);
    if ($VALGRIND) {
        my $supp = File::Spec->catfile($REPO, 't', 'valgrind.supp');
        # the workers are forked, not executed: they stay under valgrind
        unshift @cmd, 'valgrind', '--error-exitcode=99',
            '--leak-check=full', '--show-leak-kinds=definite',
            '--errors-for-leak-kinds=definite', '--num-callers=30',
            "--log-file=$self->{prefix}/logs/valgrind.%p.log",
            (-f $supp ? ("--suppressions=$supp") : ());
    }

    my $pid = fork;
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $stderr;
        open STDERR, '>>', $stderr;
        exec @cmd or POSIX::_exit(127);
    }

    my $deadline = time + ($VALGRIND ? 60 : 10);
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) {
            my $msg = _slurp($stderr);
            $msg =~ s/^/  /mg;
            die "nginx did not start (exit status " . ($? >> 8) . "):\n$msg";
        }
        my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $self->http_port,
                                    Proto => 'tcp', Timeout => 1);
        if ($s) {
            close $s;
            last;
        }
        if (time > $deadline) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
            die "nginx did not open port " . $self->http_port . "\n" . _slurp($stderr);
        }
        sleep 0.02;
    }

    $self->{pid} = $pid;
    $LIVE{$pid} = $self;
    $self->_wait_workers(0);
    $self->_wait_redis;
    return $self;
}

# the number of worker processes started since the error log had $offset bytes
sub _workers_since {
    my ($self, $offset) = @_;
    my $log = _slurp($self->error_log_file);
    $log = length($log) > $offset ? substr($log, $offset) : '';
    my $n = () = $log =~ /start worker process \d+/g;
    return ($n, $log);
}

sub _wait_workers {
    my ($self, $offset) = @_;
    my $deadline = time + ($VALGRIND ? 60 : 10);
    while (time < $deadline) {
        my ($n) = $self->_workers_since($offset);
        return 1 if $n >= $self->{workers};
        sleep 0.02;
    }
    return 0;
}

# every worker connected to Redis (a test's first call should not race the
# connection, least of all under valgrind)
sub _wait_redis {
    my ($self) = @_;
    my $redis = $self->{conf}{redis} or return;
    return if exists $self->{conf}{redis_conf};
    my $deadline = time + ($VALGRIND ? 30 : 5);
    while (time < $deadline) {
        my $list = eval { $redis->cmd('CLIENT', 'LIST') } // '';
        my $n = grep { !/cmd=client\|list/ && /cmd=(\S+)/ && $1 ne 'NULL' } split /\n/, $list;
        if ($n >= $self->{workers}) {
            sleep($VALGRIND ? 0.5 : 0.02);
            return 1;
        }
        sleep 0.05;
    }
    return 0;
}

sub reload {
    my ($self, %o) = @_;
    croak "nginx is not running" unless $self->{pid};
    if (%o) {
        $self->{conf} = {%o};
        _write($self->conf_file, $self->_config(%o));
    }
    my $offset = length _slurp($self->error_log_file);
    my @old = grep { $_ != $self->{pid} } $self->pids;
    kill 'HUP', $self->{pid};
    my $deadline = time + ($VALGRIND ? 60 : 10);
    while (time < $deadline) {
        my ($n, $log) = $self->_workers_since($offset);
        return 0 if $log =~ /\[emerg\]/;
        if ($n >= $self->{workers}) {
            # the old workers stop accepting, then exit
            while (time < $deadline && grep { kill 0, $_ } @old) {
                sleep 0.02;
            }
            $self->_wait_redis;
            return 1;
        }
        sleep 0.02;
    }
    return 0;
}

sub pids {
    my ($self) = @_;
    return () unless $self->{pid};
    my @pids = ($self->{pid});
    for my $d (glob '/proc/[0-9]*') {
        my $stat = _slurp("$d/stat");
        next unless $stat =~ /^(\d+) \(.*?\) \S (\d+)/;
        push @pids, $1 if $2 == $self->{pid};
    }
    return @pids;
}

sub kill_now {
    my ($self) = @_;
    return if $self->{owner} != $$;
    my $pid = delete $self->{pid} or return;
    delete $LIVE{$pid};
    kill 'KILL', $self->pids, $pid;
    waitpid($pid, 0);
}

sub stop {
    my ($self) = @_;
    return if $self->{owner} != $$;
    my $pid = delete $self->{pid} or return;
    delete $LIVE{$pid};

    kill 'QUIT', $pid;
    my $deadline = time + ($VALGRIND ? 60 : 20);
    my $status;
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) {
            $status = $?;
            last;
        }
        if (time > $deadline) {
            Test::More::diag("nginx $pid did not quit in time: SIGKILL");
            kill 'KILL', $pid;
            waitpid($pid, 0);
            $status = $?;
            last;
        }
        sleep 0.02;
    }
    # workers of a killed master
    sleep 0.05;

    if ($ENV{APIMON_SHOW_LOG}) {
        Test::More::diag($_) for grep { !/\[debug\]/ } split /\n/, $self->error_log;
    }

    my @alerts = $self->alerts;
    if (@alerts) {
        Test::More::fail("nginx error log has no [alert], [crit] or [emerg] line");
        Test::More::diag($_) for @alerts[0 .. ($#alerts > 20 ? 20 : $#alerts)];
    }
    if ($VALGRIND) {
        # one report per process (master, workers, old workers of reloads)
        for my $f (glob "$self->{prefix}/logs/valgrind.*.log") {
            my $vg = _slurp($f);
            next unless $vg =~ /ERROR SUMMARY: [1-9]/ || ($f =~ /\.$pid\./ && ($status >> 8) == 99);
            Test::More::fail("valgrind reports no error ($f)");
            Test::More::diag(substr($vg, 0, 8000));
        }
    }
    return $self;
}

sub error_log  { _slurp($_[0]->error_log_file) }
sub access_log { _slurp($_[0]->access_log_file) }

sub alerts {
    my ($self) = @_;
    my $expected = $self->{expected_alerts};
    return grep { /\[(alert|crit|emerg)\]/ && !($expected && /$expected/) } split /\n/, $self->error_log;
}

my $JSON = JSON::PP->new->allow_nonref;

sub request {
    my ($self, $method, $path, %o) = @_;
    my $http = HTTP::Tiny->new(timeout => $o{timeout} // ($VALGRIND ? 30 : 10),
                               keep_alive => 0, max_redirect => 0);
    my %args = (headers => $o{headers} // {});
    $args{content} = $o{content} if defined $o{content};
    my $t0 = time;
    my $res = $http->request($method, $self->url($path), \%args);
    my $out = {
        status  => $res->{status},
        headers => $res->{headers},
        content => $res->{content} // '',
        ms      => int((time - $t0) * 1000),
    };
    if (($res->{headers}{'content-type'} // '') =~ m{json}) {
        $out->{json} = eval { $JSON->decode($out->{content}) };
    }
    return $out;
}

sub get {
    my ($self, $path, %headers) = @_;
    return $self->request('GET', $path, headers => \%headers);
}

sub enforcement_catalog {
    return <<'JSON';
{
  "products": [
    { "name": "weather", "displayName": "Weather", "apis": ["forecast", "history"] },
    { "name": "maps", "displayName": "Maps", "apis": ["tiles"] }
  ],
  "plans": [
    { "name": "open", "product": "weather", "pricing": { "model": "free" } },
    { "name": "small", "product": "weather", "quota": { "limit": 3, "period": "day" },
      "pricing": { "model": "free" } },
    { "name": "slow", "product": "weather", "rateLimit": { "limit": 2, "per": "second" },
      "pricing": { "model": "free" } },
    { "name": "hourly", "product": "weather", "rateLimit": { "limit": 1, "per": "hour" },
      "pricing": { "model": "free" } },
    { "name": "maps", "product": "maps", "pricing": { "model": "free" } },
    { "name": "manual", "product": "weather", "approval": "manual",
      "pricing": { "model": "free" } }
  ]
}
JSON
}

sub subscribe {
    my ($redis, $plan, %o) = @_;
    my $owner = 'dev@example.com';
    unless ($redis->{_apimon_dev}++) {
        eval { $redis->put_developer($owner, { firstName => 'Dev', lastName => 'Eloper',
                                               userName => 'dev' }) };
    }
    my %products = (maps => 'maps');
    return $redis->create_subscription(owner => $owner, plan => $plan,
                                       product => $products{$plan} // 'weather', %o);
}

sub DESTROY {
    my ($self) = @_;
    $self->stop if $self->{pid} && $self->{owner} == $$ && !$self->{in_destroy}++;
}

END {
    my $code = $?;
    for my $n (values %LIVE) {
        $n->stop if $n->{owner} == $$;
    }
    $? = $code;
}

1;
