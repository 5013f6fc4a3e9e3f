#!/usr/bin/perl
# Configuration of the key check: apimon_key_secret_file (missing, unreadable,
# empty, too short, too long, too many secrets, duplicate, wrong context),
# apimon_key_legacy and apimon_unknown_key_cache (max= required, each
# parameter once, a second line a duplicate) are refused naming the
# directive, by nginx -t too, and never with the secret in the message; a
# reload with a bad secret file is refused and the running one keeps working.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());

my $loc = "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://backend; }\n";
my $short = 'short-secret-' . ('s' x 18);                       # 31 bytes
my $good = join '', map { sprintf '%02x', int rand 256 } 1 .. 32;

sub write_file {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
}

# [ name, key_secret (harness file text) or undef, http text, expected message ]
my @bad = (
    [ 'missing file', undef, 'apimon_key_secret_file /nonexistent/key.secret;',
      qr/"apimon_key_secret_file": could not open "\/nonexistent\/key\.secret"/ ],
    [ 'a directory', undef, 'apimon_key_secret_file /;',
      qr/"apimon_key_secret_file": could not read "\/"/ ],
    [ 'empty file', '', undef, qr/"apimon_key_secret_file": "\S+key\.secret" holds no secret/ ],
    [ 'blank lines only', "  \n\t\n\r\n", undef, qr/"apimon_key_secret_file": "\S+" holds no secret/ ],
    [ 'too short', $short, undef,
      qr/"apimon_key_secret_file": the secret on line 1 of "\S+key\.secret" is too short \(at least 32 bytes/ ],
    [ 'second secret too short', "$good\n\n$short", undef, qr/the secret on line 3 of "\S+" is too short/ ],
    [ 'too long', 'x' x 5000, undef, qr/"apimon_key_secret_file": "\S+key\.secret" is too long/ ],
    [ 'five secrets', join("\n", ($good) x 5), undef, qr/"apimon_key_secret_file": "\S+" holds more than 4 secrets/ ],
    [ 'duplicate', $good, 'apimon_key_secret_file key.secret;', qr/"apimon_key_secret_file" directive is duplicate/ ],
    [ 'server context', $good, undef, qr/"apimon_key_secret_file" directive is not allowed here/,
      "        apimon_key_secret_file key.secret;\n" ],
    [ 'legacy off without a secret', undef, 'apimon_key_legacy off;',
      qr/"apimon_key_legacy" is off, but "apimon_key_secret_file" is not set/ ],
    [ 'legacy maybe', $good, 'apimon_key_legacy maybe;', qr/invalid value "maybe" in "apimon_key_legacy" directive/ ],
    [ 'cache max=0', $good, 'apimon_unknown_key_cache max=0;',
      qr/"apimon_unknown_key_cache": invalid "max=0", expected max=1\.\.1048576/ ],
    [ 'cache max=x', $good, 'apimon_unknown_key_cache max=x;', qr/"apimon_unknown_key_cache": invalid "max=x"/ ],
    [ 'cache ttl=0', $good, 'apimon_unknown_key_cache max=10 ttl=0;',
      qr/"apimon_unknown_key_cache": invalid "ttl=0", expected a time from 1ms to 1h/ ],
    [ 'cache ttl=2h', $good, 'apimon_unknown_key_cache max=10 ttl=2h;', qr/"apimon_unknown_key_cache": invalid "ttl=2h"/ ],
    [ 'cache without max', $good, 'apimon_unknown_key_cache ttl=1s;',
      qr/"apimon_unknown_key_cache": expected max=N \[ttl=time\] or off/ ],
    [ 'cache off max', $good, 'apimon_unknown_key_cache off max=3;', qr/"apimon_unknown_key_cache": expected/ ],
    [ 'cache foo', $good, 'apimon_unknown_key_cache foo=1;', qr/"apimon_unknown_key_cache": expected/ ],
    [ 'cache duplicate', $good, "apimon_unknown_key_cache off;\n    apimon_unknown_key_cache off;",
      qr/"apimon_unknown_key_cache" directive is duplicate/ ],
    [ 'cache ttl alone, twice', $good, "apimon_unknown_key_cache ttl=10s;\n    apimon_unknown_key_cache ttl=10s;",
      qr/"apimon_unknown_key_cache": expected max=N \[ttl=time\] or off in \S+nginx\.conf:\d+/ ],
    [ 'cache max then ttl alone', $good, "apimon_unknown_key_cache max=5;\n    apimon_unknown_key_cache ttl=10s;",
      qr/"apimon_unknown_key_cache" directive is duplicate/ ],
    [ 'cache max twice', $good, 'apimon_unknown_key_cache max=3 max=4;',
      qr/"apimon_unknown_key_cache": "max" is given twice/ ],
    [ 'cache ttl twice', $good, 'apimon_unknown_key_cache ttl=1s ttl=2s;',
      qr/"apimon_unknown_key_cache": "ttl" is given twice/ ],
    [ 'cache in a location', $good, undef, qr/"apimon_unknown_key_cache" directive is not allowed here/,
      "        location /y/ { apimon_unknown_key_cache off; }\n" ],
);
for my $case (@bad) {
    my ($name, $secret, $http, $want, $server) = @$case;
    my $n = Apimon::Nginx->new(workers => 1);
    my $started = eval {
        $n->start(redis => $r, key_secret => $secret, http => $http ? "    $http\n" : '',
                  server => $loc . ($server // ''));
        1;
    };
    $n->stop if $started;
    ok(!$started, "$name: refused");
    like($@, $want, "$name: the message names the directive");
    like($@, qr/in \S+nginx\.conf:\d+/, "$name: with file and line") unless $name =~ /legacy off/;
    unlike($@, qr/\Q$short\E|\Q$good\E/, "$name: the secret is not in the message") if defined $secret;
}

# nginx -t says the same
my $n = Apimon::Nginx->new(workers => 1);
my $started = eval { $n->start(redis => $r, key_secret => $short, server => $loc); 1 };
ok(!$started, 'too short: nginx does not start');
my $t = `nginx -t -p ${\ $n->prefix}/ -c ${\ $n->conf_file} 2>&1`;
isnt($? >> 8, 0, 'nginx -t fails');
like($t, qr/\[emerg\] \d+#\d+: "apimon_key_secret_file": the secret on line 1 of "\S+" is too short/, 'nginx -t names the directive');
unlike($t, qr/\Q$short\E/, 'nginx -t does not show the secret');

# accepted: relative to the prefix, trailing blanks and CRLF, long secrets
# (hashed first, as HMAC does), two secrets; the tag verifies the same
$n = Apimon::Nginx->new(workers => 1);
my $long = 'L' x 100;
write_file($n->prefix . '/conf/secret.crlf', "$long \r\n\r\n");
ok(eval { $n->start(redis => $r, key_secret => undef, http => "    apimon_key_secret_file secret.crlf;\n",
                    server => $loc); 1 }, 'a path relative to conf/, a 100-byte secret with CRLF: accepted') or diag $@;
my $s = Apimon::Nginx::subscribe($r, 'open');
my $k = $r->set_key($s->{id}, 'primary', key => Apimon::Redis::new_key_v2($s->{id}, $long));
is($n->get('/x/a', 'X-API-Key' => $k)->{status}, 200, 'a key tagged under the long secret: 200');
is($n->get('/x/a', 'X-API-Key' => Apimon::Redis::new_key_v2($s->{id}, "$long "))->{status}, 401,
   'trailing blanks are not part of the secret');

# a reload with a bad secret file is refused; the old configuration serves on
write_file($n->prefix . '/conf/secret.crlf', $short);
ok(!$n->reload, 'reload with a too short secret: refused');
like($n->error_log, qr/\[emerg\] .*"apimon_key_secret_file": the secret on line 1 of "\S+" is too short/,
     'the reload error names the directive');
is($n->get('/x/a', 'X-API-Key' => $k)->{status}, 200, 'the running configuration still serves the key');
unlink $n->prefix . '/conf/secret.crlf';
ok(!$n->reload, 'reload with the secret file gone: refused');
like($n->error_log, qr/"apimon_key_secret_file": could not open "\S+secret\.crlf"/, 'named');
is($n->get('/x/a', 'X-API-Key' => $k)->{status}, 200, 'still served');
unlike($n->error_log, qr/\Q$long\E|\Q$short\E/, 'no secret in the error log');
# the [emerg] lines of the refused reloads are expected: the log starts anew
# for the check of a graceful stop
write_file($n->error_log_file, '');
$n->stop;

done_testing;
