#!/usr/bin/perl
# Management API: usage per API per day (from real calls and from the check
# script at chosen instants), its argument checks, and reading the audit
# stream page by page.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Admin;
use POSIX qw(strftime);

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Redis::catalog_fixture());
my $n = Apimon::Admin::start_nginx($r);
my $api = Apimon::Admin->new(nginx => $n);
*ms = \&Apimon::Redis::ms_utc;

*problem_ok = \&Apimon::Admin::problem_ok;

my $DEV = '/developers/ann@example.com';
$api->post('/developers', { email => 'ann@example.com' });

# --- usage from real calls through nginx, today (UTC)
my $s = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze' })->{json};
my %codes;
$codes{ $api->call($s->{primary})->{status} }++ for 1 .. 8;     # 5/second: some are rate limited
$codes{ $api->call($s->{primary}, path => '/maps/x')->{status} }++;  # not entitled
my $today = strftime('%Y-%m-%d', gmtime);
my $res = $api->get("$DEV/subscriptions/$s->{name}/usage?from=$today&to=$today");
is($res->{status}, 200, 'usage');
is($res->{json}{name}, $s->{name}, 'name');
is($res->{json}{from}, $today, 'from');
my %row = map { ($_->{api} => $_) } @{ $res->{json}{usage} };
is($row{forecast}{date}, $today, 'date');
is($row{forecast}{accepted}, $codes{200}, 'accepted calls = the 200s');
is($row{forecast}{refused} // 0, $codes{429} // 0, 'refused calls = the 429s');
is($row{forecast}{refusedBy}{rate_limited} // 0, $codes{429} // 0, 'by reason');
is($row{tiles}{refusedBy}{not_entitled}, 1, 'not entitled call counted for its API');
is($row{tiles}{accepted}, 0, 'nothing accepted on tiles');
is($res->{json}{total}{accepted} + $res->{json}{total}{refused}, 9, 'every identified call counted once');

# --- usage over chosen days, across a month boundary
my $h = $api->post("$DEV/subscriptions", { apiproduct => 'weather', plan => 'weather-bronze',
                                           startTime => ms('2025-01-01') })->{json};
$r->check(key => $h->{primary}, api => 'forecast', now => ms('2025-10-31T23:00:00')) for 1 .. 2;
$r->check(key => $h->{primary}, api => 'forecast', now => ms('2025-11-01T00:30:00'));
$r->check(key => $h->{primary}, api => 'history', now => ms('2025-11-01T00:31:00'));
$r->check(key => $h->{primary}, api => 'history', now => ms('2025-11-30T23:59:59'));
$r->check(key => $h->{primary}, api => 'tiles', now => ms('2025-12-01T00:00:00'));
my $u = "$DEV/subscriptions/$h->{name}/usage";
$res = $api->get("$u?from=2025-11-01&to=2025-11-30");
is_deeply($res->{json}{usage}, [
    { date => '2025-11-01', api => 'forecast', accepted => 1, refused => 0, refusedBy => {} },
    { date => '2025-11-01', api => 'history', accepted => 1, refused => 0, refusedBy => {} },
    { date => '2025-11-30', api => 'history', accepted => 1, refused => 0, refusedBy => {} },
], 'November, per day and API, in order');
is_deeply($res->{json}{total}, { accepted => 3, refused => 0 }, 'total');
$res = $api->get("$u?from=2025-10-31&to=2025-12-01");
is_deeply([ map { "$_->{date} $_->{api} $_->{accepted} $_->{refused}" } @{ $res->{json}{usage} } ],
          [ '2025-10-31 forecast 2 0', '2025-11-01 forecast 1 0', '2025-11-01 history 1 0',
            '2025-11-30 history 1 0', '2025-12-01 tiles 0 1' ], 'across three months');
is($res->{json}{usage}[-1]{refusedBy}{not_entitled}, 1, 'refusal reason');
is_deeply($api->get("$u?from=2024-01-01&to=2024-01-31")->{json}{usage}, [], 'no usage: empty list');

problem_ok($api->get($u), 400, qr/^from: is required/, 'no from');
problem_ok($api->get("$u?from=2025-11-01"), 400, qr/^to: is required/, 'no to');
problem_ok($api->get("$u?from=2025-02-29&to=2025-03-01"), 400, qr/^from: must be a date/, 'not a date');
problem_ok($api->get("$u?from=20251101&to=2025-11-02"), 400, qr/^from: must be a date/, 'wrong format');
problem_ok($api->get("$u?from=2025-11-02&to=2025-11-01"), 400, qr/^to: must not be before from/, 'to before from');
problem_ok($api->get("$u?from=2024-01-01&to=2025-11-01"), 400, qr/^to: at most 399 days/, 'range too long');
is($api->get("$u?from=2024-02-29&to=2024-03-01")->{status}, 200, 'leap day');
problem_ok($api->get('/developers/bob@example.com/subscriptions/' . $h->{name} . '/usage?from=2025-11-01&to=2025-11-02'),
           404, qr/no such subscription/, 'usage of somebody else');
is($api->post("$u?from=2025-11-01&to=2025-11-02")->{status}, 405, 'POST usage');

# --- audit: paging with since
my $all = $api->get('/audit')->{json};
my @ids = map { $_->{id} } @{ $all->{entries} };
is(scalar @ids, 3, 'three changes so far (developer, two purchases)');
ok(!exists $all->{nextSince}, 'no more');
for my $e (@{ $all->{entries} }) {
    like($e->{ts}, qr/^\d{13}$/, "ts of $e->{action}");
    is($e->{who}, 'portal', "who of $e->{action}");
    is($e->{addr}, '127.0.0.1', "addr of $e->{action}");
}
is($all->{entries}[0]{before}, undef, 'a creation has no before');
is($all->{entries}[1]{after}{id}, $s->{name}, 'after: the subscription');
$res = $api->get('/audit?count=2');
is_deeply([ map { $_->{id} } @{ $res->{json}{entries} } ], [ @ids[0, 1] ], 'first page');
is($res->{json}{nextSince}, $ids[1], 'nextSince');
$res = $api->get("/audit?count=2&since=$res->{json}{nextSince}");
is_deeply([ map { $_->{id} } @{ $res->{json}{entries} } ], [ $ids[2] ], 'since an id: the entries after it');
my ($ms) = $ids[1] =~ /^(\d+)-/;
$res = $api->get("/audit?since=$ms");
is($res->{json}{entries}[0]{id}, $ids[1], 'since ms: from that instant on');
is_deeply($api->get('/audit?since=99999999999999')->{json}{entries}, [], 'since the future: nothing');
problem_ok($api->get('/audit?since=yesterday'), 400, qr/^since:/, 'bad since');
problem_ok($api->get('/audit?count=0'), 400, qr/^count:/, 'bad count');

$n->stop;
is_deeply([ $n->alerts ], [], 'no alerts');
done_testing;
