package Apimon::Admin;

# Test helpers for the management API (t/3*): an nginx configuration with an
# admin location, a protected location proxying to a local upstream, and a
# small JSON client. Core Perl only.

=head1 NAME

Apimon::Admin - management API client and nginx configuration for tests

=head1 SYNOPSIS

    my $r = Apimon::Redis->start;
    my $n = Apimon::Admin::start_nginx($r, tokens => "portal:" . ('p' x 32) . "\n");
    my $api = Apimon::Admin->new(nginx => $n, token => 'p' x 32);
    my $res = $api->post('/developers', { email => 'ann@example.com' });
    is($res->{status}, 201);
    is($res->{json}{email}, 'ann@example.com');
    my $c = $api->call($key);             # GET /weather/ with X-API-Key

=head1 FUNCTIONS

=over

=item start_nginx($redis, %o)

Starts nginx (Apimon::Nginx) with C<location /apimon/ { apimon_admin; ... }>,
C<location /weather/ { apimon on; apimon_api forecast; proxy_pass ... }> (and
C</maps/> for the API C<tiles>) proxying to the harness's C<backend>. Options: C<tokens> (the token file's text;
C<undef> = no C<apimon_admin_token_file>), C<admin> (more directives for the
admin location), C<http> (more directives at http level), C<key_secret> (as
for Apimon::Nginx: C<undef>, no C<apimon_key_secret_file>).

=item $api->request($method, $path, $body, %o)

C<$path> is relative to C</apimon/v1/organizations/default> unless it starts
with C<//> (then relative to the server: C<//apimon/v1/...>). C<$body>: a
Perl structure (sent as JSON), a string (sent as is) or undef. C<token>
overrides the token (C<undef>: no Authorization header), C<headers> adds
headers. Returns C<{ status, headers, json, content }>; C<json> is the
decoded body when it is JSON.

=item get/post/put($path, ...) - request with that method

=item problem_ok($res, $status, $detail_re, $name)

Tests (Test::More) that the answer is an application/problem+json with that
status (also as its C<status> member), the C<type> and C<code> of that status
and a C<detail> matching the pattern.

=item own_log($nginx)

The error log without nginx's own debug lines that echo request and response
headers and variable values (C<http header: ">, C<http script var: ">,
C<http proxy header:>), which hold whatever a client sent: what remains is
what nginx and apimon chose to log.

=item $api->call($key, %o) - a call to the protected location (C<path>, default C</weather/today>); the response hash

=back

=cut

use strict;
use warnings;
use HTTP::Tiny;
use JSON::PP;
use Test::More ();
use Apimon::Redis;
use Apimon::Nginx;

our $JSON = JSON::PP->new->canonical->allow_nonref;
our $TOKEN = 'portal-token-0123456789abcdef';
our $ORG_BASE = '/apimon/v1/organizations/default';

sub start_nginx {
    my ($redis, %o) = @_;
    my $tokens = exists $o{tokens} ? $o{tokens} : "portal:$TOKEN\n";
    my $n = Apimon::Nginx->new;
    my $file = '';
    if (defined $tokens) {
        my $path = $n->prefix . '/admin.tokens';
        open my $fh, '>', $path or die "$path: $!";
        print $fh $tokens;
        close $fh;
        $file = "apimon_admin_token_file $path;";
    }
    my $admin = $o{admin} // '';
    my $http = $o{http} // '';
    my @secret = exists $o{key_secret} ? (key_secret => $o{key_secret}) : ();
    $n->start(redis => $redis, http => $http, @secret, server => <<"SERVER");
        location /apimon/ {
            apimon_admin;
            $file
            $admin
        }

        location /weather/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }

        location /maps/ {
            apimon on;
            apimon_api tiles;
            proxy_pass http://backend;
        }
SERVER
    wait_redis($n);
    return $n;
}

# The workers connect to Redis after they start: wait until a call that
# needs Redis (a well-formed key nobody holds) is answered 401, not 503.
sub wait_redis {
    my ($n) = @_;
    my $key = Apimon::Redis::new_key(Apimon::Redis::new_uuid());
    my $http = HTTP::Tiny->new(timeout => 10);
    my ($until, $ok) = (time + 20, 0);
    while (time < $until) {
        my $res = $http->get($n->url('/weather/'), { headers => { 'X-API-Key' => $key } });
        $ok = $res->{status} == 401 ? $ok + 1 : 0;
        return 1 if $ok == 4;      # every worker, most likely
        select undef, undef, undef, 0.02;
    }
    die "nginx did not reach Redis\n";
}

sub problem_ok {
    my ($res, $status, $detail, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::is($res->{status}, $status, "$name: $status");
    Test::More::like($res->{headers}{'content-type'} // '', qr{^application/problem\+json},
                     "$name: problem+json");
    Test::More::is($res->{json}{status}, $status, "$name: status member");
    Test::More::like($res->{json}{detail} // '', $detail, "$name: detail");
    my %code = (400 => 'bad_request', 401 => 'unauthorized', 403 => 'forbidden', 404 => 'not_found',
                405 => 'method_not_allowed', 409 => 'conflict', 412 => 'precondition_failed',
                413 => 'body_too_large', 415 => 'unsupported_media_type', 422 => 'idempotency_mismatch',
                503 => 'redis_unavailable');
    Test::More::is($res->{json}{type} // '', "tag:apimon,2026:" . ($code{$status} // 'internal'),
                   "$name: type");
    Test::More::is($res->{json}{code} // '', $code{$status} // 'internal', "$name: code");
}

sub own_log {
    my ($n) = @_;
    return join "\n", grep { !/\[debug\].*(?:http header: "|http script var: "|http proxy header:)/ }
        split /\n/, $n->error_log;
}

sub new {
    my ($class, %o) = @_;
    return bless {
        nginx => $o{nginx},
        token => exists $o{token} ? $o{token} : $TOKEN,
        http  => HTTP::Tiny->new(timeout => 10, keep_alive => 0),
    }, $class;
}

sub url {
    my ($self, $path) = @_;
    my $p = $path =~ m{^//} ? substr($path, 1) : $ORG_BASE . $path;
    return 'http://127.0.0.1:' . $self->{nginx}->http_port . $p;
}

sub request {
    my ($self, $method, $path, $body, %o) = @_;
    my %h = %{ $o{headers} || {} };
    my $token = exists $o{token} ? $o{token} : $self->{token};
    $h{Authorization} //= "Bearer $token" if defined $token;
    my %args = (headers => \%h);
    if (defined $body) {
        $args{content} = ref $body ? $JSON->encode($body) : $body;
        $h{'Content-Type'} //= 'application/json';
    }
    my $res = $self->{http}->request($method, $self->url($path), \%args);
    my $out = { status => $res->{status}, headers => $res->{headers},
                content => $res->{content} };
    my $ct = $res->{headers}{'content-type'} // '';
    if ($ct =~ m{^application/(problem\+)?json} && length($res->{content} // '')) {
        $out->{json} = eval { $JSON->decode($res->{content}) };
    }
    return $out;
}

sub get  { my $s = shift; $s->request('GET', @_) }
sub post { my $s = shift; $s->request('POST', @_) }
sub put  { my $s = shift; $s->request('PUT', @_) }

sub call {
    my ($self, $key, %o) = @_;
    my %h;
    $h{'X-API-Key'} = $key if defined $key;
    my $res = $self->{http}->request('GET',
        'http://127.0.0.1:' . $self->{nginx}->http_port . ($o{path} // '/weather/today'),
        { headers => \%h });
    return $res;
}

1;
