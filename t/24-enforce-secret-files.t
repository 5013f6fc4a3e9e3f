#!/usr/bin/perl
# The one reader of secret files serves apimon_redis password_file=,
# apimon_key_secret_file and apimon_admin_token_file alike: a missing file, a
# directory and a file over the directive's limit are refused naming the
# directive and the file (with file and line), never with what it holds; a
# file exactly at the limit is accepted.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
my $rport = $r->port;
my $loc = "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://backend; }\n";
my $secret = join '', map { sprintf '%02x', int rand 256 } 1 .. 32;     # 64 bytes
my $token = 'tok-' . join '', map { sprintf '%02x', int rand 256 } 1 .. 16;

sub write_file { open my $fh, '>', $_[0] or die "$_[0]: $!"; print $fh $_[1]; close $fh or die $! }

# each directive: its line for a file, the limit, a file of exactly that many
# bytes holding one secret, and how the message calls the file
my @directives = (
    { name => 'apimon_redis', what => 'password file ', max => 1024,
      conf => sub { (redis_conf => "apimon_redis 127.0.0.1:$rport password_file=$_[0];",
                     server => $loc) },
      fill => sub { $secret . (' ' x ($_[0] - 64)) } },
    { name => 'apimon_key_secret_file', what => '', max => 4096,
      conf => sub { (redis => $r, key_secret => undef,
                     http => "    apimon_key_secret_file $_[0];\n", server => $loc) },
      fill => sub { $secret . "\n" . (' ' x ($_[0] - 65)) } },
    { name => 'apimon_admin_token_file', what => '', max => 65536,
      conf => sub { (redis => $r, server => "        location /apimon/ { apimon_admin; apimon_admin_token_file $_[0]; }\n") },
      fill => sub { "portal:$token\n" . ('#' x ($_[0] - length($token) - 8)) } },
);

for my $d (@directives) {
    my $n = Apimon::Nginx->new(workers => 1);
    my $file = $n->prefix . '/conf/secret';
    my ($name, $noun) = (qr/"\Q$d->{name}\E": /, qr/\Q$d->{what}\E/);

    my @bad = (
        [ 'missing file', '/nonexistent/secret', undef, qr/${name}could not open $noun"\/nonexistent\/secret"/ ],
        [ 'a directory', '/', undef, qr/${name}could not read $noun"\/"/ ],
        [ 'over the limit', $file, $d->{fill}->($d->{max} + 1),
          qr/$name$noun"\S+\/conf\/secret" is too long \(over $d->{max} bytes\)/ ],
    );
    for my $case (@bad) {
        my ($what, $path, $text, $want) = @$case;
        write_file($path, $text) if defined $text;
        my $started = eval { $n->start($d->{conf}->($path)); 1 };
        $n->stop if $started;
        ok(!$started, "$d->{name}, $what: refused");
        like($@, $want, "$d->{name}, $what: the message names the directive and the file");
        like($@, qr/in \S+nginx\.conf:\d+/, "$d->{name}, $what: with file and line");
        unlike($@, qr/\Q$secret\E|\Q$token\E/, "$d->{name}, $what: not what the file holds");
    }

    write_file($file, $d->{fill}->($d->{max}));
    is(-s $file, $d->{max}, "$d->{name}: a file of $d->{max} bytes");
    ok(eval { $n->start($d->{conf}->($file)); 1 }, "$d->{name}: at the limit, accepted") or diag $@;
    $n->stop;
    unlike($n->error_log, qr/\Q$secret\E|\Q$token\E/, "$d->{name}: nothing of the file in the error log");
}

done_testing;
