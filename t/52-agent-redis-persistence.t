#!/usr/bin/perl
# Usage and quotas survive a Redis crash only with appendonly yes,
# appendfsync everysec and maxmemory-policy noeviction.  The module logs one
# warning per connection when CONFIG GET shows otherwise; the agent refuses
# to bill (exit 4) unless --allow-unsafe-redis.  When CONFIG is not allowed
# (renamed away, as managed Redis does) both say so once and go on.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use lib 't/lib';
use Apimon::Redis;
use Apimon::Nginx;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent setup_models agent_env);

my $stripe = Apimon::Stripe->start;

# --- the module
sub nginx_on {
    my ($r) = @_;
    $r->apply_catalog(Apimon::Nginx::enforcement_catalog());
    my $s = Apimon::Nginx::subscribe($r, 'open');
    my $n = Apimon::Nginx->new(workers => 1);
    $n->start(redis => $r, server => <<'CONF');
        location /weather/ {
            apimon on;
            apimon_api forecast;
            proxy_pass http://backend;
        }
CONF
    my $res = $n->get('/weather/today', 'X-API-Key' => $s->{primary});
    is($res->{status}, 200, 'requests are served');
    return $n;
}
# the error log lines matching $re: the CONFIG GET replies come before
# those of the first request on the connection, so after a served request
# they are in (the short wait is for the log write)
sub log_lines {
    my ($n, $re) = @_;
    my @l;
    for (1 .. 20) {
        @l = grep { /$re/ } split /\n/, $n->error_log;
        last if @l;
        sleep 0.01;
    }
    return @l;
}
my $warn = qr/\[warn\].*apimon: redis at 127\.0\.0\.1:\d+ may lose usage counts and quotas on a crash/;
my $denied = qr/\[notice\].*apimon: redis at 127\.0\.0\.1:\d+ refused CONFIG GET/;

SKIP: {
    skip 'module not built', 10 unless -f Apimon::Nginx->module_file;

    my $r = Apimon::Redis->start(aof => 0, args => ['--maxmemory-policy', 'allkeys-lru']);
    my $n = nginx_on($r);
    my @w = log_lines($n, $warn);
    is(scalar @w, 1, "Redis's defaults: one warning at connect");
    like($w[0], qr/appendonly "no", maxmemory-policy "allkeys-lru"; apimon needs appendonly yes, appendfsync everysec, maxmemory-policy noeviction/,
        '... naming each setting off and the value found');
    $n->stop;
    $r->stop;

    $r = Apimon::Redis->start;
    $n = nginx_on($r);
    is(scalar(log_lines($n, $warn)), 0, 'the required settings: no warning');
    is(scalar(log_lines($n, $denied)), 0, '... and no notice');
    $n->stop;
    $r->stop;

    $r = Apimon::Redis->start(aof => 0, args => ['--rename-command', 'CONFIG', '']);
    $n = nginx_on($r);
    my @d = log_lines($n, $denied);
    is(scalar @d, 1, 'CONFIG renamed away: one notice');
    like($d[0], qr/its persistence settings are not checked/, '... saying what is not checked');
    is(scalar(log_lines($n, $warn)), 0, '... and no warning');
    $n->stop;
    $r->stop;
}

# --- the agent
SKIP: {
    skip 'billing-agent not built', 8 unless -x Apimon::Agent::agent_bin();

    my $r = Apimon::Redis->start(aof => 0);
    setup_models($r);
    my $env = agent_env($r, $stripe);
    my $run = run_agent(env => $env, args => ['bill', '--period', '2026-01']);
    is($run->{rc}, 4, "Redis's defaults: the agent refuses to bill (exit 4)");
    like($run->{err}, qr/Redis may lose usage and quotas on a crash: appendonly is "no" \(needs yes\).*--allow-unsafe-redis/,
        '... naming the setting, the value and the override');
    is(scalar($stripe->requests), 0, '... and sends nothing');
    is($r->cmd('EXISTS', 'apimon:bill:lock'), 0, '... nor takes the lock');

    $run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--allow-unsafe-redis']);
    is($run->{rc}, 0, '--allow-unsafe-redis: billed') or diag $run->{err};
    like($run->{err}, qr/billing anyway \(--allow-unsafe-redis\)/, '... with a warning');
    $r->stop;
    $stripe->reset;

    $r = Apimon::Redis->start(args => ['--rename-command', 'CONFIG', '']);
    setup_models($r);
    $run = run_agent(env => agent_env($r, $stripe), args => ['bill', '--period', '2026-01']);
    is($run->{rc}, 0, 'CONFIG renamed away: billing proceeds') or diag $run->{err};
    my @n = $run->{err} =~ /(Redis does not allow CONFIG GET)/g;
    is(scalar @n, 1, '... after saying once that it cannot check');
}

done_testing;
