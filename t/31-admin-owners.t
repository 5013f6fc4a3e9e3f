#!/usr/bin/perl
# Management API: developers and app groups (create, read, update, list with
# pagination), bad input (malformed JSON, missing, mistyped and unknown
# fields, body too large), conflicts, and the catalog endpoints.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Admin;

my $r = Apimon::Redis->start;
my $n = Apimon::Admin::start_nginx($r, admin => 'apimon_admin_body_max 512;');
my $api = Apimon::Admin->new(nginx => $n);

*problem_ok = \&Apimon::Admin::problem_ok;

# --- catalog: empty, then applied
is_deeply($api->get('/apiproducts')->{json}, { apiProduct => [] }, 'no catalog yet: empty list');
problem_ok($api->get('/apiproducts/weather'), 404, qr/no such apiproduct: weather/, 'no catalog yet: no product');
$r->apply_catalog(Apimon::Redis::catalog_fixture());
my $res = $api->get('/apiproducts');
is($res->{status}, 200, 'list products');
is_deeply([ map { $_->{name} } @{ $res->{json}{apiProduct} } ], [ 'weather', 'maps' ], 'both products');
$res = $api->get('/apiproducts/weather');
is($res->{json}{displayName}, 'Weather API', 'product displayName');
is_deeply($res->{json}{apis}, [ 'forecast', 'history' ], 'product apis');
is_deeply([ map { $_->{name} } @{ $res->{json}{plans} } ], [ 'weather-free', 'weather-bronze', 'weather-gold' ], 'its plans only');
my ($gold) = grep { $_->{name} eq 'weather-gold' } @{ $res->{json}{plans} };
is($gold->{approval}, 'manual', 'plan approval');
is_deeply($gold->{rateLimit}, { limit => 50, per => 'second' }, 'plan rate limit');
is_deeply($gold->{quota}, { limit => 100000, period => 'month' }, 'plan quota');
is($gold->{pricing}{model}, 'graduated', 'plan pricing');
is($gold->{pricing}{tiers}[1]{unitAmount}, 20, 'plan price tiers');
problem_ok($api->get('/apiproducts/nope'), 404, qr/no such apiproduct: nope/, 'unknown product');

# --- developers: create
$res = $api->post('/developers', { email => 'ann@example.com', firstName => 'Ann', lastName => 'Lee',
                                   userName => 'ann', customer => 'cus_A1' });
is($res->{status}, 201, 'developer created');
is($res->{json}{email}, 'ann@example.com', 'email');
is($res->{json}{customer}, 'cus_A1', 'billing customer');
like($res->{json}{createdAt}, qr/^\d{13}$/, 'createdAt: ms as a string');
is($res->{json}{lastModifiedAt}, $res->{json}{createdAt}, 'lastModifiedAt');
is($r->cmd('HGET', 'apimon:developer:ann@example.com', 'firstName'), 'Ann', 'stored in Redis');

problem_ok($api->post('/developers', { email => 'ann@example.com' }), 409, qr/already exists/, 'create twice');
problem_ok($api->post('/developers', '{"email": "bob@example.com",'), 400, qr/malformed JSON/, 'malformed JSON');
problem_ok($api->post('/developers', '{"email": "bob@example.com"} x'), 400, qr/malformed JSON/, 'trailing garbage');
problem_ok($api->post('/developers', '["bob@example.com"]'), 400, qr/must be a JSON object/, 'not an object');
problem_ok($api->post('/developers', ''), 400, qr/JSON object is required/, 'empty body');
problem_ok($api->post('/developers', { firstName => 'Bob' }), 400, qr/^email: is required/, 'missing email');
problem_ok($api->post('/developers', { email => 42 }), 400, qr/^email: must be a string/, 'mistyped email');
problem_ok($api->post('/developers', { email => 'bob' }), 400, qr/^email: not an email address/, 'not an email');
problem_ok($api->post('/developers', { email => 'bob@example.com', firstName => 7 }), 400, qr/firstName: must be a string/, 'mistyped firstName');
problem_ok($api->post('/developers', { email => 'bob@example.com', colour => 'red' }), 400, qr/colour: unknown field/, 'unknown field');
problem_ok($api->post('/developers', { email => 'bob@example.com', firstName => 'x' x 600 }), 413, qr/larger than 512 bytes/, 'body over apimon_admin_body_max');
is($r->cmd('EXISTS', 'apimon:developer:bob@example.com'), 0, 'nothing was created by the failures');

# chunked body over the limit (no Content-Length)
{
    my $port = $n->http_port;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port) or die $!;
    my $chunk = '{"email": "bob@example.com", "firstName": "' . ('y' x 600) . '"}';
    print $s "POST $Apimon::Admin::ORG_BASE/developers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           . "Authorization: Bearer $Apimon::Admin::TOKEN\r\nTransfer-Encoding: chunked\r\n"
           . "Content-Type: application/json\r\n\r\n"
           . sprintf("%x\r\n%s\r\n0\r\n\r\n", length $chunk, $chunk);
    local $/;
    my $reply = <$s>;
    like($reply, qr{^HTTP/1.1 413}, 'chunked body over the limit: 413');
}

# --- developers: read and update
$res = $api->get('/developers/ann@example.com');
is($res->{status}, 200, 'get developer');
is($res->{json}{lastName}, 'Lee', 'fields');
problem_ok($api->get('/developers/nobody@example.com'), 404, qr/no such developer: nobody\@example.com/, 'unknown developer');
is($api->get('/developers/ann%40example.com')->{status}, 200, 'percent-encoded email in the path');

my $before = $res->{json};
$res = $api->put('/developers/ann@example.com', { firstName => 'Anna' });
is($res->{status}, 200, 'update');
is($res->{json}{firstName}, 'Anna', 'changed field');
is($res->{json}{lastName}, 'Lee', 'other fields kept');
is($res->{json}{createdAt}, $before->{createdAt}, 'createdAt kept');
$res = $api->put('/developers/ann@example.com', { %{ $res->{json} }, customer => undef });
is($res->{status}, 200, 'a fetched record can be sent back');
is($res->{json}{customer}, '', 'null empties a field');
problem_ok($api->put('/developers/ann@example.com', { email => 'other@example.com' }), 400, qr/email: cannot be changed/, 'email cannot change');
problem_ok($api->put('/developers/nobody@example.com', { firstName => 'X' }), 404, qr/no such developer/, 'update unknown developer');
problem_ok($api->put('/developers/ann@example.com', 'nope'), 400, qr/malformed JSON/, 'update with malformed JSON');
is($api->get('/developers/ann@example.com')->{json}{firstName}, 'Anna', 'failed updates changed nothing');

# --- developers: pagination over several pages
$api->post('/developers', { email => sprintf('dev%02d@example.com', $_) }) for 1 .. 12;
my (@all, $start, $pages);
do {
    $res = $api->get('/developers?count=5' . (defined $start ? "&startKey=$start" : ''));
    is($res->{status}, 200, 'page ' . ++$pages);
    push @all, map { $_->{email} } @{ $res->{json}{developer} };
    $start = $res->{json}{nextStartKey};
} while (defined $start && $pages < 10);
is($pages, 3, '13 developers in pages of 5: 3 pages');
is_deeply(\@all, [ 'ann@example.com', map { sprintf('dev%02d@example.com', $_) } 1 .. 12 ], 'every developer once, in order');
$res = $api->get('/developers?startKey=dev05%40example.com&count=2');
is_deeply([ map { $_->{email} } @{ $res->{json}{developer} } ], [ 'dev05@example.com', 'dev06@example.com' ], 'startKey is inclusive (Apigee)');
is($res->{json}{nextStartKey}, 'dev07@example.com', 'nextStartKey');
is(scalar @{ $api->get('/developers')->{json}{developer} }, 13, 'default count 100');
# the largest page (and an answer larger than a socket buffer)
$r->put_developer(sprintf('bulk%04d@example.com', $_), { firstName => 'Bulk' x 20 }) for 1 .. 1000;
$res = $api->get('/developers?count=1000');
is(scalar @{ $res->{json}{developer} }, 1000, 'count=1000: a full page');
cmp_ok(length $res->{content}, '>', 200000, 'a large answer arrives whole');
is($res->{json}{nextStartKey}, 'bulk1000@example.com', 'and where the next page starts');
is(scalar @{ $api->get("/developers?count=1000&startKey=$res->{json}{nextStartKey}")->{json}{developer} }, 13,
   'the rest');
$r->cmd('ZREMRANGEBYLEX', 'apimon:developers', '[bulk', '[bulk~');

problem_ok($api->get('/developers?count=0'), 400, qr/^count: must be an integer from 1 to 1000/, 'count 0');
problem_ok($api->get('/developers?count=1001'), 400, qr/^count:/, 'count 1001');
problem_ok($api->get('/developers?count=x'), 400, qr/^count:/, 'count x');

# --- app groups
$res = $api->post('/appgroups', { name => 'team-a', displayName => 'Team A', customer => 'cus_T' });
is($res->{status}, 201, 'app group created');
is($res->{json}{displayName}, 'Team A', 'displayName');
problem_ok($api->post('/appgroups', { name => 'team a' }), 400, qr/^name: must match/, 'bad app group name');
problem_ok($api->post('/appgroups', { displayName => 'x' }), 400, qr/^name: is required/, 'missing name');
problem_ok($api->post('/appgroups', { name => 'team-a' }), 409, qr/already exists/, 'app group twice');
problem_ok($api->post('/appgroups', { name => 'team-b', firstName => 'x' }), 400, qr/firstName: unknown field/, 'developer field on an app group');
is($api->get('/appgroups/team-a')->{json}{customer}, 'cus_T', 'get app group');
problem_ok($api->get('/appgroups/team-z'), 404, qr/no such appgroup: team-z/, 'unknown app group');
$res = $api->put('/appgroups/team-a', { displayName => 'Team Alpha' });
is($res->{json}{displayName}, 'Team Alpha', 'update app group');
$api->post('/appgroups', { name => "team-$_" }) for qw(b c);
$res = $api->get('/appgroups?count=2');
is_deeply([ map { $_->{name} } @{ $res->{json}{appGroups} } ], [ 'team-a', 'team-b' ], 'app groups page 1');
$res = $api->get("/appgroups?count=2&startKey=$res->{json}{nextStartKey}");
is_deeply([ map { $_->{name} } @{ $res->{json}{appGroups} } ], [ 'team-c' ], 'app groups page 2');
ok(!exists $res->{json}{nextStartKey}, 'last page has no nextStartKey');

# --- audit of these changes
my $audit = $api->get('/audit?count=1000')->{json}{entries};
my @actions = map { $_->{action} } @$audit;
is(scalar(grep { $_ eq 'developer.create' } @actions), 13, 'one audit entry per developer created');
my ($upd) = grep { $_->{action} eq 'developer.update' } @$audit;
is($upd->{target}, 'ann@example.com', 'update target');
is($upd->{before}{firstName}, 'Ann', 'before');
is($upd->{after}{firstName}, 'Anna', 'after');
is($upd->{who}, 'portal', 'who: the token name');
ok(!grep({ $_->{action} =~ /create/ && $_->{target} eq 'bob@example.com' } @$audit), 'failed requests are not audited');

$n->stop;
is_deeply([ $n->alerts ], [], 'no alerts');
done_testing;
