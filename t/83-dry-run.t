#!/usr/bin/perl
# apimon_dry_run: every decision is made and counted under its own reason,
# $apimon_result says why (dry_run_<result>), nothing is refused and no
# usage is billed for what would have been refused.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX qw(strftime);
use Apimon::Redis;
use Apimon::Nginx;
use Apimon::Prom;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $small = Apimon::Nginx::subscribe($r, 'small');      # quota 3 a day
my $maps = Apimon::Nginx::subscribe($r, 'maps');         # not entitled to forecast

my $n = Apimon::Nginx->new(workers => 2);
$n->start(redis => $r, server => <<'CONF');
        location /dry/ {
            apimon on;
            apimon_api forecast;
            apimon_dry_run on;
            apimon_log_level warn;
            add_header X-Result $apimon_result always;
            proxy_pass http://backend;
        }

        location /enforce/ {
            apimon on;
            apimon_api forecast;
            add_header X-Result $apimon_result always;
            proxy_pass http://backend;
        }

        location = /metrics {
            apimon_metrics;
        }
CONF

sub call { my ($path, $key) = @_; $n->get($path, ($key ? ('X-API-Key' => $key) : ())) }

my @got;
for (1 .. 5) {
    my $res = call('/dry/a', $small->{primary});
    push @got, "$res->{status} " . ($res->{headers}{'x-result'} // '');
    like($res->{content}, qr/^backend/, "dry run call $_: proxied") if $_ > 3;
}
is_deeply(\@got, ['200 allowed', '200 allowed', '200 allowed', '200 dry_run_quota_exceeded', '200 dry_run_quota_exceeded'],
          'over the quota: let through, $apimon_result dry_run_quota_exceeded');

my $res = call('/dry/b');
is("$res->{status} $res->{headers}{'x-result'}", '200 dry_run_missing_key', 'no key: let through, dry_run_missing_key');
$res = call('/dry/c', 'ak2_nonsense');
is("$res->{status} $res->{headers}{'x-result'}", '200 dry_run_invalid_key', 'a bad key: dry_run_invalid_key');
$res = call('/dry/d', $maps->{primary});
is("$res->{status} $res->{headers}{'x-result'}", '200 dry_run_not_entitled', 'not entitled: dry_run_not_entitled');
ok(!exists $res->{headers}{'www-authenticate'} && !exists $res->{headers}{'retry-after'}, 'no refusal headers');

# the same subscription where it is enforced: refused, as the quota says
$res = call('/enforce/e', $small->{primary});
is("$res->{status} $res->{headers}{'x-result'}", '403 quota_exceeded', 'enforced: the quota is used up by the 3 allowed calls');

# usage: 3 accepted calls billed; the dry run's 2 only as refusals by reason
my $ym = strftime('%Y%m', gmtime);
my $day = strftime('%Y%m%d', gmtime);
my %u = @{ $r->cmd('HGETALL', "apimon:sub:{$small->{id}}:usage:$ym") };
is($u{"$day|forecast|ok"}, 3, 'usage billed: the 3 allowed calls only');
is($u{"$day|forecast|quota_exceeded"}, 3, 'refusals by reason: the 2 of the dry run and the enforced one');

# metrics: under their own reason
my $m = Apimon::Prom::parse_exposition(call('/metrics')->{content});
my $s = $m->{apimon_checks_total}{samples};
is($s->{'apimon_checks_total{api=forecast,result=dry_run_quota_exceeded}'}, 2, 'metrics: dry_run_quota_exceeded 2');
is($s->{'apimon_checks_total{api=forecast,result=quota_exceeded}'}, 1, 'metrics: quota_exceeded 1 (enforced)');
is($s->{'apimon_checks_total{api=forecast,result=dry_run_missing_key}'}, 1, 'metrics: dry_run_missing_key 1');
is($s->{'apimon_checks_total{api=forecast,result=allowed}'}, 3, 'metrics: allowed 3');
ok(!exists $s->{'apimon_checks_total{api=forecast,result=dry_run_allowed}'}, 'no dry_run_allowed series');

# the log: at apimon_log_level, with the request's context
my @l = grep { /dry run, not refused/ } split /\n/, $n->error_log;
is(scalar @l, 5, 'five dry-run refusals logged');
like($l[0], qr/\[warn\] .*apimon: dry run, not refused: quota_exceeded, subscription \Q$small->{id}\E, client: 127\.0\.0\.1, .*request: "GET \/dry\/a/,
     'logged at warn with the request context');

# a configuration error names the directive
my $bad = Apimon::Nginx->new(workers => 1);
ok(!eval { $bad->start(redis => $r, server => "location / { apimon on; apimon_api forecast; apimon_dry_run maybe; }"); 1 },
   'apimon_dry_run maybe: refused');
like($bad->error_log . ($@ // ''), qr/apimon_dry_run/, 'the error names the directive');

$n->stop;
is_deeply([$n->alerts], [], 'no alerts');
done_testing;
