#!/usr/bin/perl
# The Stripe secret: a bad key fails fast with a clear message and exit 2
# before any ledger write; the key file must be owner-only; the secret is
# never taken from argv and never appears in logs, reports or stdout.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent spawn_agent wait_agent setup_models agent_env);
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $dir = tempdir(CLEANUP => 1);
my $secret = $stripe->key;

# a wrong key
my $t0 = time;
my $run = run_agent(env => agent_env($r, $stripe, STRIPE_API_KEY => 'sk_test_wrongwrongwrong1234'),
    args => ['bill', '--period', '2026-01']);
is($run->{rc}, 2, 'bad key: exit 2');
like($run->{err}, qr/rejected the secret key .*401.*STRIPE_API_KEY/s, 'bad key: clear message');
unlike($run->{err}, qr/wrongwrongwrong/, 'bad key: the key itself is not logged');
ok(time - $t0 < 3, 'bad key: fails fast');
is(scalar($stripe->requests), 1, 'bad key: one request, then stop');
is($r->cmd('EXISTS', 'apimon:bill:202601'), 0, 'bad key: no ledger entry written');
is($r->cmd('EXISTS', 'apimon:bill:lock'), 0, 'bad key: lock released');

# no key at all
$run = run_agent(env => agent_env($r, $stripe, STRIPE_API_KEY => undef),
    args => ['bill', '--period', '2026-01']);
is($run->{rc}, 2, 'no key: exit 2');
like($run->{err}, qr/STRIPE_API_KEY or --stripe-key-file/, 'no key: says where to put it');

# never from argv, and the refusal does not echo it
$run = run_agent(env => agent_env($r, $stripe, STRIPE_API_KEY => undef),
    args => ['bill', '--period', '2026-01', "--stripe-key=$secret"]);
is($run->{rc}, 2, 'key on argv: refused with exit 2');
unlike($run->{err}, qr/\Q$secret\E/, 'key on argv: not echoed');

# a key file readable by others is refused; an owner-only one works
my $kf = "$dir/stripe.key";
open my $f, '>', $kf or die;
print $f "$secret\n";
close $f;
chmod 0644, $kf;
$run = run_agent(env => agent_env($r, $stripe, STRIPE_API_KEY => undef),
    args => ['bill', '--period', '2026-01', '--stripe-key-file', $kf]);
is($run->{rc}, 2, 'key file 0644: exit 2');
like($run->{err}, qr/chmod 600/, 'key file 0644: says why');
chmod 0600, $kf;

# a real run with the file: nothing secret anywhere
my $p = spawn_agent(env => agent_env($r, $stripe, STRIPE_API_KEY => undef),
    args => ['bill', '--period', '2026-01', '--stripe-key-file', $kf,
             '--report', "$dir/r.csv", '--max-rps', '20']);
sleep 0.2;
my $cmdline = do { local $/; open my $c, '<', "/proc/$p->{pid}/cmdline"; <$c> } // '';
$run = wait_agent($p);
is($run->{rc}, 0, 'key file 0600: exit 0') or diag $run->{err};
ok(length $cmdline, 'read the running agent\'s argv');
unlike($cmdline, qr/\Q$secret\E/, 'secret not in argv');
unlike($run->{err} . $run->{out}, qr/\Q$secret\E/, 'secret not in the log or stdout');
my $report = do { local $/; open my $c, '<', "$dir/r.csv"; <$c> };
unlike($report, qr/\Q$secret\E/, 'secret not in the report');
my $ledger = join '', @{ $r->cmd('HGETALL', 'apimon:bill:202601') };
unlike($ledger, qr/\Q$secret\E/, 'secret not in the ledger');
ok(!grep({ $_->{body} =~ /\Q$secret\E/ || ($_->{query} // '') =~ /\Q$secret\E/ } $stripe->requests),
    'secret only in the Authorization header');

done_testing;
