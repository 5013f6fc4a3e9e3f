#!/usr/bin/perl
# Enforcement: every result, its status, headers and problem+json body.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());

my $n = Apimon::Nginx->new;
$n->start(redis => $r, server => <<'CONF');
        location /weather/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }

        location /legacy/ {
            apimon on;
            apimon_api forecast;
            apimon_legacy_headers on;
            proxy_pass http://backend;
        }

        location /paid/ {
            apimon on;
            apimon_api forecast;
            apimon_quota_status 402;
            proxy_pass http://backend;
        }

        location /history/ {
            apimon on;
            apimon_api history;
            proxy_pass http://backend;
        }

        location /open/ {
            proxy_pass http://backend;
        }
CONF

sub evalsha_calls {
    my $info = $r->cmd('INFO', 'commandstats');
    my $n = 0;
    $n += $1 while $info =~ /cmdstat_(?:evalsha|eval):calls=(\d+)/g;
    return $n;
}

sub problem_ok {
    my ($res, $status, $code, $name) = @_;
    is($res->{status}, $status, "$name: status $status");
    like($res->{headers}{'content-type'} // '', qr{^application/problem\+json}, "$name: problem+json");
    my $j = $res->{json} // {};
    is($j->{status}, $status, "$name: status member");
    is($j->{code}, $code, "$name: code $code");
    like($j->{type} // '', qr/\Q$code\E$/, "$name: type");
    ok(length($j->{title} // '') && length($j->{detail} // ''), "$name: title and detail");
}

sub parse_sf {
    my ($v) = @_;
    my %out;
    for my $item (split /,\s*/, $v // '') {
        my ($name, @params) = split /;/, $item;
        $name =~ s/^"(.*)"$/$1/ or return undef;
        $out{$name} = { map { split /=/, $_, 2 } @params };
    }
    return \%out;
}

# --- allowed: the upstream answers, with the limits
my $s = Apimon::Nginx::subscribe($r, 'slow');
my $res = $n->get('/weather/x', 'X-API-Key' => $s->{primary});
is($res->{status}, 200, 'allowed: 200');
like($res->{content}, qr/^backend uri=\/weather\/x/, 'allowed: proxied');
my $policy = parse_sf($res->{headers}{'ratelimit-policy'});
my $state = parse_sf($res->{headers}{'ratelimit'});
is_deeply($policy, { 'plan-rate' => { q => 2, w => 1 } }, 'RateLimit-Policy "plan-rate";q=2;w=1');
is($state->{'plan-rate'}{r}, 1, 'RateLimit r=1 after the first call');
ok(defined $state->{'plan-rate'}{t}, 'RateLimit t');
is($res->{headers}{'x-ratelimit-limit'}, undef, 'no legacy headers by default');

$res = $n->get('/weather/x', 'X-API-Key' => $s->{secondary});
is($res->{status}, 200, 'secondary key: 200');

# --- rate limited: 429 with Retry-After and the limits
$res = $n->get('/weather/x', 'X-API-Key' => $s->{primary});
problem_ok($res, 429, 'rate_limited', 'rate limited');
ok(($res->{headers}{'retry-after'} // 0) >= 1, 'rate limited: Retry-After >= 1');
is(parse_sf($res->{headers}{'ratelimit'})->{'plan-rate'}{r}, 0, 'rate limited: r=0');
ok($res->{headers}{'ratelimit-policy'}, 'rate limited: RateLimit-Policy');
unlike($res->{content}, qr/\Q$s->{primary}\E/, 'the key is not echoed');

# --- legacy headers
my $h = Apimon::Nginx::subscribe($r, 'hourly');
$res = $n->get('/legacy/x', 'X-API-Key' => $h->{primary});
is($res->{status}, 200, 'legacy: 200');
is($res->{headers}{'x-ratelimit-limit'}, 1, 'X-RateLimit-Limit');
is($res->{headers}{'x-ratelimit-remaining'}, 0, 'X-RateLimit-Remaining');
ok($res->{headers}{'x-ratelimit-reset'} > 3000, 'X-RateLimit-Reset (an hour window)');
$res = $n->get('/legacy/x', 'X-API-Key' => $h->{primary});
problem_ok($res, 429, 'rate_limited', 'legacy: 1 per hour');
ok($res->{headers}{'retry-after'} > 3000 && $res->{headers}{'retry-after'} <= 3600,
   'Retry-After: the hour window');
is($res->{headers}{'x-ratelimit-remaining'}, 0, 'legacy headers on a refusal');

# --- quota exceeded: 403 by default, apimon_quota_status elsewhere
my $q = Apimon::Nginx::subscribe($r, 'small');
for my $i (1 .. 3) {
    $res = $n->get('/weather/x', 'X-API-Key' => $q->{primary});
    is($res->{status}, 200, "quota: call $i of 3");
    is(parse_sf($res->{headers}{'ratelimit'})->{'plan-quota'}{r}, 3 - $i, "quota: r=" . (3 - $i));
}
is_deeply(parse_sf($res->{headers}{'ratelimit-policy'}), { 'plan-quota' => { q => 3, w => 86400 } },
          'RateLimit-Policy "plan-quota";q=3;w=86400');
$res = $n->get('/weather/x', 'X-API-Key' => $q->{primary});
problem_ok($res, 403, 'quota_exceeded', 'quota exceeded');
my $to_midnight = 86400 - time % 86400;
ok(abs(($res->{headers}{'retry-after'} // 0) - $to_midnight) <= 2, 'quota: Retry-After = seconds to 00:00 UTC');
$res = $n->get('/paid/x', 'X-API-Key' => $q->{primary});
problem_ok($res, 402, 'quota_exceeded', 'apimon_quota_status 402');
ok($res->{headers}{'retry-after'}, 'apimon_quota_status 402: Retry-After');

# --- missing key
$res = $n->get('/weather/x');
problem_ok($res, 401, 'missing_key', 'missing key');
is($res->{headers}{'www-authenticate'}, 'ApiKey realm="apimon"', 'missing key: WWW-Authenticate');
is($res->{headers}{'ratelimit'}, undef, 'missing key: no RateLimit (no subscription known)');
$res = $n->get('/weather/x', 'X-API-Key' => '');
problem_ok($res, 401, 'missing_key', 'empty key');

# --- malformed keys: refused without a Redis round trip
my $good = $s->{primary};
my $before = evalsha_calls();
my %bad = (
    'short'            => substr($good, 0, 73),
    'long'             => $good . 'a',
    'absurdly long'    => 'ak_' . ('a' x 6000),
    'bad checksum'     => substr($good, 0, 73) . (substr($good, 73) eq 'a' ? 'b' : 'a'),
    'upper case'       => uc $good,
    'bad charset'      => substr($good, 0, 40) . '1' . substr($good, 41),
    'wrong prefix'     => 'ax_' . substr($good, 3),
    'secret changed'   => substr($good, 0, 50) . (substr($good, 50, 1) eq 'a' ? 'b' : 'a') . substr($good, 51),
);
for my $name (sort keys %bad) {
    $res = $n->get('/weather/x', 'X-API-Key' => $bad{$name});
    problem_ok($res, 401, 'invalid_key', "malformed ($name)");
    is($res->{headers}{'www-authenticate'}, 'ApiKey realm="apimon"', "malformed ($name): WWW-Authenticate");
    unlike($res->{content}, qr/\Q$bad{$name}\E/, "malformed ($name): not echoed");
}
is(evalsha_calls(), $before, 'malformed keys never reach Redis');

# --- well-formed but unknown or revoked: 401 through Redis
my $unknown = Apimon::Redis::new_key(Apimon::Redis::new_uuid());
$res = $n->get('/weather/x', 'X-API-Key' => $unknown);
problem_ok($res, 401, 'invalid_key', 'unknown subscription');
is(evalsha_calls(), $before + 1, 'an unknown key is asked to Redis');

my $o = Apimon::Nginx::subscribe($r, 'open');
my $forged = Apimon::Redis::new_key($o->{id});
problem_ok($n->get('/weather/x', 'X-API-Key' => $forged), 401, 'invalid_key', 'forged key of a real subscription');
is($n->get('/weather/x', 'X-API-Key' => $o->{primary})->{status}, 200, 'before rotation: 200');
my $new = $r->set_key($o->{id}, 'primary');
problem_ok($n->get('/weather/x', 'X-API-Key' => $o->{primary}), 401, 'invalid_key', 'revoked (rotated) key');
is($n->get('/weather/x', 'X-API-Key' => $new)->{status}, 200, 'the new key works at once');
is($n->get('/weather/x', 'X-API-Key' => $o->{secondary})->{status}, 200, 'the secondary still works');

# --- inactive: suspended, cancelled, not yet started, submitted
$r->set_state($o->{id}, 'suspend');
$res = $n->get('/weather/x', 'X-API-Key' => $new);
problem_ok($res, 403, 'inactive', 'suspended');
is($res->{headers}{'www-authenticate'}, undef, '403: no WWW-Authenticate');
$r->set_state($o->{id}, 'resume');
is($n->get('/weather/x', 'X-API-Key' => $new)->{status}, 200, 'resumed: 200');
$r->set_state($o->{id}, 'cancel');
problem_ok($n->get('/weather/x', 'X-API-Key' => $new), 403, 'inactive', 'cancelled');

my $future = Apimon::Nginx::subscribe($r, 'open', start => int(time * 1000) + 86_400_000);
problem_ok($n->get('/weather/x', 'X-API-Key' => $future->{primary}), 403, 'inactive', 'before startTime');
my $manual = Apimon::Nginx::subscribe($r, 'manual');
problem_ok($n->get('/weather/x', 'X-API-Key' => $manual->{primary}), 403, 'inactive', 'submitted (manual approval)');
$r->set_state($manual->{id}, 'activate');
is($n->get('/weather/x', 'X-API-Key' => $manual->{primary})->{status}, 200, 'activated: 200');

# --- not entitled: the product does not include this API
my $m = Apimon::Nginx::subscribe($r, 'maps');
$res = $n->get('/weather/x', 'X-API-Key' => $m->{primary});
problem_ok($res, 403, 'not_entitled', 'not entitled');
my $w = Apimon::Nginx::subscribe($r, 'open');
is($n->get('/history/x', 'X-API-Key' => $w->{primary})->{status}, 200, 'another API of the product: 200');

# --- HEAD and POST refusals keep the connection usable
$res = $n->request('HEAD', '/weather/x');
is($res->{status}, 401, 'HEAD: 401');
is($res->{content}, '', 'HEAD: no body');
$res = $n->request('POST', '/weather/x', content => 'x' x 5000,
                   headers => { 'Content-Type' => 'text/plain' });
problem_ok($res, 401, 'missing_key', 'POST with a body');

# --- a location without apimon is not touched
$res = $n->get('/open/x');
is($res->{status}, 200, 'unprotected location: 200');
is($res->{headers}{'ratelimit'}, undef, 'unprotected location: no RateLimit');

# --- keys never reach the error log: nginx's own debug lines dump request
# headers, so look at every other line and at the module's own debug lines
$n->stop;
my $log = join "\n", grep { !/\[debug\]/ || /apimon/ } split /\n/, $n->error_log;
for my $k ($s->{primary}, $s->{secondary}, $q->{primary}, $o->{primary}, $new, $unknown, $forged, values %bad) {
    next if length($k) < 20;
    if (index($log, $k) >= 0) {
        fail('a key is in the error log');
        last;
    }
}
pass('no key in the error log');
like($n->access_log, qr{^/weather/x 429 rate_limited \Q$s->{id}\E slow weather - 0$}m,
     'access log: $apimon_* variables');

done_testing;
