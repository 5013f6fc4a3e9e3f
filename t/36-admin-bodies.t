#!/usr/bin/perl
# Management API bodies: every member is honoured or refused with 400 naming
# it (unknown, unsupported, repeated, unreadable: a number JSON cannot hold,
# a string holding U+0000 or a raw control character), on every endpoint that
# takes a body; times have a range and never overflow. A refusal changes
# nothing.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Admin;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Redis::catalog_fixture());
my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);

*problem_ok = \&Apimon::Admin::problem_ok;

my $DEV = '/developers/ann@example.com';
is($api->post('/developers', { email => 'ann@example.com', firstName => 'Ann' })->{status}, 201, 'developer');
is($api->post('/appgroups', { name => 'team-a' })->{status}, 201, 'app group');
my $s = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' })->{json};
my $base = "$DEV/subscriptions/$s->{name}";

# what a refusal must leave as it was
sub state_of {
    return join '|', $r->cmd('SCARD', 'apimon:subs'), $r->cmd('ZCARD', 'apimon:developers'),
        $r->cmd('ZCARD', 'apimon:appgroups'), $r->cmd('XLEN', 'apimon:audit') // 0,
        map { join ',', @{ $r->cmd('HGETALL', $_) } }
            'apimon:developer:ann@example.com', 'apimon:appgroup:team-a', Apimon::Redis::sub_key($s->{name});
}
my $before = state_of();
sub unchanged { is(state_of(), $before, "$_[0]: nothing changed") }

sub refused {
    my ($method, $path, $body, $detail, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    problem_ok($api->request($method, $path, $body), 400, $detail, $name);
    unchanged($name);
}

my $P = '"apiproduct": "weather", "plan": "weather-bronze"';

# --- members nobody takes
refused('POST', "$DEV/subscriptions", qq({$P, "attributes": [{"name": "tier", "val": "1"}]}),
        qr/^attributes\[0\]\.val: unknown field/, 'purchase: an attribute member');
refused('POST', "$DEV/subscriptions", qq({$P, "foo": 1}), qr/^foo: unknown field$/, 'purchase: unknown field');
refused('POST', "$DEV/subscriptions", qq({$P, "name": "x"}), qr/^name: unknown field$/, 'purchase: name is not settable');
refused('POST', '/developers', { email => 'bob@example.com', attributes => {} , apps => [] },
        qr/^apps: not supported \(an Apigee field apimon does not keep\)/, 'developer: an Apigee field not kept');
refused('PUT', $DEV, { attributes => 'tier=1' }, qr/^attributes: must be an array/, 'developer update: attributes');
refused('PUT', '/appgroups/team-a', { attributes => [ { name => '' } ] }, qr/^attributes\[0\]\.name: must be a string/,
        'app group update: attributes');
refused('PUT', $DEV, { status => 'gone' }, qr/^status: must be active or inactive$/, 'developer update: status');
refused('PUT', $DEV, { nickname => 'x' }, qr/^nickname: unknown field$/, 'developer update: unknown field');
refused('POST', "$base:suspend", { reason => 'unpaid' }, qr/^reason: unknown field$/, 'action: a member');
refused('POST', "$base:suspend", '"suspend"', qr/must be a JSON object/, 'action: not an object');
refused('POST', "$base:suspend", '{"a":', qr/malformed JSON/, 'action: malformed');
refused('POST', "$base/keys/primary:regenerate", { key => 'ak_mine' }, qr/^key: unknown field$/,
        'regenerate: a member');
is($api->call($s->{primary})->{status}, 200, 'the key refused to be regenerated still works');

# an empty body or {} is no member at all
my $res = $api->post("$base:suspend", '{}');
is($res->{json}{state}, 'suspended', 'action with {}');
$res = $api->post("$base:resume");
is($res->{json}{state}, 'active', 'action without a body');
$before = state_of();

# --- repeated members: which one would count?
refused('POST', "$DEV/subscriptions", qq({$P, "plan": "weather-gold"}), qr/^plan: duplicate field$/,
        'purchase: a member twice');
refused('PUT', $DEV, '{"firstName": "A", "firstName": "B"}', qr/^firstName: duplicate field$/,
        'developer update: a member twice');
refused('PUT', $DEV, '{' . join(',', map { qq("f$_": "") } 1 .. 65) . '}', qr/^request body: at most 64 members$/,
        'too many members');

# --- numbers JSON cannot hold
refused('POST', '/developers', '{"email": "bob@example.com", "firstName": 1e999}',
        qr/^firstName: number out of range$/, 'developer: 1e999');
refused('PUT', $DEV, '{"lastName": -1e999}', qr/^lastName: number out of range$/, 'developer update: -1e999');
refused('PUT', $DEV, '{"lastName": [1, {"a": 1e400}]}', qr/^lastName: number out of range$/, 'nested 1e400');
refused('POST', "$DEV/subscriptions", qq({$P, "startTime": 1e999}), qr/^startTime: number out of range$/,
        'purchase: startTime 1e999');

# --- strings cJSON would cut at U+0000, raw control characters
my @strings = (
    [ 'POST', '/developers', { email => 'bob@example.com' }, [qw(email firstName lastName userName customer)] ],
    [ 'PUT', $DEV, {}, [qw(firstName lastName userName customer)] ],
    [ 'POST', '/appgroups', { name => 'team-b' }, [qw(name displayName customer)] ],
    [ 'PUT', '/appgroups/team-a', {}, [qw(displayName customer)] ],
    [ 'POST', "$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' },
      [qw(apiproduct plan startTime endTime)] ],
);
for my $c (@strings) {
    my ($method, $path, $good, $fields) = @$c;
    for my $f (@$fields) {
        my %b = (%$good);
        delete $b{$f};
        my $json = $Apimon::Admin::JSON->encode(\%b);
        my $sep = %b ? ', ' : '';
        for my $v ([ '"a\u0000b"', 'an escaped NUL' ], [ '"\u0000"', 'only NUL' ],
                   [ "\"a\tb\"", 'a raw tab' ], [ "\"a\nb\"", 'a raw newline' ]) {
            (my $body = $json) =~ s/\}$/$sep"$f": $v->[0]}/;
            refused($method, $path, $body, qr/^\Q$f\E: a string must not hold U\+0000 or an unescaped control character$/,
                    "$method $path: $f with $v->[1]");
        }
    }
}
refused('PUT', $DEV, '{"first\u0000Name": "x"}', qr/^first\\u0000Name: a string must not hold U\+0000/,
        'a member name with NUL');
refused('POST', "$base:suspend", '{"a\u0000": 1}', qr/^a\\u0000: a string must not hold U\+0000/,
        'action: a member name with NUL');

# escaped control characters and an escaped backslash before "u0000" are text
$res = $api->put($DEV, '{"firstName": "a\tb", "lastName": "c\\\\u0000d"}');
is($res->{status}, 200, 'escaped tab, escaped backslash: 200');
is($res->{json}{firstName}, "a\tb", 'the tab is stored');
is($res->{json}{lastName}, 'c\u0000d', 'the backslash and the text after it are stored');
$before = state_of();

# --- times: a documented range, no overflow, as numbers and as strings
my $RANGE = qr/^startTime: must be milliseconds since the epoch from 946684800000 \(2000-01-01\) to 253402300799999 \(9999-12-31T23:59:59\.999Z\)$/;
my $FORM = qr/^startTime: must be milliseconds since the epoch, a positive integer or a string of digits$/;
for my $c (
    [ '"1234567890123456789"', $RANGE, '19 digits' ],
    [ '"9223372036854775807"', $RANGE, 'INT64_MAX as a string' ],
    [ '9223372036854775807', $FORM, 'INT64_MAX as a number' ],
    [ '"9223372036854775808"', $FORM, 'INT64_MAX + 1 as a string' ],
    [ '"99999999999999999999999999"', $FORM, '26 digits' ],
    [ '1e300', $FORM, '1e300' ],
    [ '"946684799999"', $RANGE, 'just before 2000-01-01' ],
    [ '946684799999', $RANGE, 'just before 2000-01-01, a number' ],
    [ '"253402300800000"', $RANGE, '10000-01-01' ],
    [ '1', $RANGE, '1 ms' ],
    [ '0', $FORM, '0' ], [ '"0"', $FORM, '"0"' ], [ '-5', $FORM, 'negative' ], [ '"-5"', $FORM, '"-5"' ],
    [ '1.5', $FORM, 'a fraction' ], [ '"1e12"', $FORM, '"1e12"' ], [ '""', $FORM, 'empty' ],
    [ 'true', $FORM, 'a boolean' ], [ '" 1795305600000"', $FORM, 'a blank' ],
) {
    refused('POST', "$DEV/subscriptions", qq({$P, "startTime": $c->[0]}), $c->[1], "startTime $c->[2]");
    (my $end = $c->[1]) =~ s/startTime/endTime/;
    refused('POST', "$DEV/subscriptions", qq({$P, "endTime": $c->[0]}), qr/$end/, "endTime $c->[2]");
}
refused('POST', "$DEV/subscriptions", qq({$P, "startTime": "1795305600000", "endTime": "1795305600000"}),
        qr/^endTime: must be after startTime \(1795305600000\)$/, 'endTime = startTime');
refused('POST', "$DEV/subscriptions", qq({$P, "startTime": 1795305600000, "endTime": 1795305599999}),
        qr/^endTime: must be after startTime/, 'endTime before startTime');
refused('POST', "$DEV/subscriptions", qq({$P, "endTime": "946684800001"}),
        qr/^endTime: must be after startTime/, 'endTime before now, no startTime');

for my $c ([ '"946684800000"', '946684800000', 'first instant', 200 ],
           [ '"0001795305600000"', '1795305600000', 'leading zeros', 200 ],
           [ '253402300799999', '253402300799999', 'last instant', 403 ]) {
    $res = $api->post("$DEV/subscriptions", qq({$P, "startTime": $c->[0]}));
    is($res->{status}, 201, "startTime $c->[2]: 201");
    is($res->{json}{startTime}, $c->[1], "startTime $c->[2]: stored as $c->[1]");
    is($api->call($res->{json}{primary})->{status}, $c->[3], "startTime $c->[2]: the key answers $c->[3]");
}

# the audit's since: ms or an entry id, no overflow
problem_ok($api->get('/audit?since=99999999999999999999'), 400, qr/^since:/, 'since beyond 2^63');
is($api->get('/audit?since=9223372036854775807')->{status}, 200, 'since 2^63 - 1');

$n->stop;
is_deeply([ $n->alerts ], [], 'no alerts');
done_testing;
