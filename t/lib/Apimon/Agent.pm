package Apimon::Agent;

# Helpers for the billing agent's tests (t/4*): run build/billing-agent with
# a controlled environment, a catalog with one plan per pricing model, and
# provisioning through Apimon::Redis (the schema scripts) only.

use strict;
use warnings;
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempfile);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(agent_bin run_agent spawn_agent wait_agent models_catalog
    make_calls ms setup_models items_by_line agent_env);

my $root = File::Spec->rel2abs(dirname(__FILE__) . '/../../..');

# APIMON_AGENT: another binary (the installed package's /usr/bin/billing-agent)
sub agent_bin {
    my $b = $ENV{APIMON_AGENT} || ($ENV{APIMON_BUILD} // "$root/build") . '/billing-agent';
    return $b;
}

sub ms { Apimon::Redis::ms_utc(@_) }

# runs the agent; returns { rc, out, err }
# %o: env => { NAME => value or undef to delete }, args => [...]
sub run_agent {
    my (%o) = @_;
    my $p = spawn_agent(%o);
    return wait_agent($p);
}

sub spawn_agent {
    my (%o) = @_;
    my (undef, $out) = tempfile(UNLINK => 1);
    my (undef, $err) = tempfile(UNLINK => 1);
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        for my $k (keys %{ $o{env} || {} }) {
            if (defined $o{env}{$k}) { $ENV{$k} = $o{env}{$k} } else { delete $ENV{$k} }
        }
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out or die;
        open STDERR, '>', $err or die;
        my @pre = $ENV{APIMON_VALGRIND}
            ? ('valgrind', '-q', '--error-exitcode=99', '--leak-check=full') : ();
        exec @pre, agent_bin(), @{ $o{args} || [] };
        exit 127;
    }
    return { pid => $pid, out => $out, err => $err, args => $o{args} };
}

sub _slurp { local $/; open my $f, '<', $_[0] or return ''; my $s = <$f>; return $s }

sub wait_agent {
    my ($p, $timeout) = @_;
    my $t0 = time;
    while (1) {
        my $r = waitpid($p->{pid}, WNOHANG);
        last if $r == $p->{pid};
        if (defined $timeout && time - $t0 > $timeout) {
            kill 'KILL', $p->{pid};
            waitpid($p->{pid}, 0);
            last;
        }
        sleep 0.02;
    }
    my $st = $?;
    return { rc => ($st & 127) ? -($st & 127) : ($st >> 8),
        out => _slurp($p->{out}), err => _slurp($p->{err}) };
}

# one plan per pricing model, no limits (so any number of calls is accepted)
sub models_catalog {
    return <<'JSON';
{
  "products": [
    { "name": "geo", "displayName": "Geo API", "apis": ["lookup", "route"] }
  ],
  "plans": [
    { "name": "geo-free", "product": "geo", "displayName": "Free",
      "pricing": { "model": "free" } },
    { "name": "geo-flat", "product": "geo", "displayName": "Flat",
      "pricing": { "model": "flat", "currency": "usd", "amount": 3100 } },
    { "name": "geo-metered", "product": "geo", "displayName": "Metered",
      "pricing": { "model": "metered", "currency": "usd", "unitAmount": 7,
                   "unitSize": 10, "rounding": "up" } },
    { "name": "geo-overage", "product": "geo", "displayName": "Overage",
      "pricing": { "model": "flat_with_overage", "currency": "eur",
                   "amount": 1000, "includedUnits": 20, "unitAmount": 5,
                   "unitSize": 1 } },
    { "name": "geo-graduated", "product": "geo", "displayName": "Graduated",
      "pricing": { "model": "graduated", "currency": "usd", "unitSize": 1,
                   "tiers": [ { "upTo": 10, "unitAmount": 10, "flatAmount": 100 },
                              { "upTo": null, "unitAmount": 5, "flatAmount": 0 } ] } },
    { "name": "geo-volume", "product": "geo", "displayName": "Volume",
      "pricing": { "model": "volume", "currency": "usd", "unitSize": 1,
                   "tiers": [ { "upTo": 10, "unitAmount": 10, "flatAmount": 0 },
                              { "upTo": null, "unitAmount": 6, "flatAmount": 50 } ] } },
    { "name": "geo-package", "product": "geo", "displayName": "Package",
      "pricing": { "model": "package", "currency": "jpy", "amount": 300,
                   "packageSize": 10 } }
  ]
}
JSON
}

# n accepted calls of a subscription at instant $now (ms), as nginx makes them
sub make_calls {
    my ($r, $sub, $n, $now, $api) = @_;
    for my $i (1 .. $n) {
        my $c = $r->check(key => $sub->{primary}, api => $api // 'lookup',
            now => $now + $i);
        die "call refused: $c->{result}\n" unless $c->{result} eq 'allowed';
    }
}

# The subscriptions of t/40: one or more per model, billed for 2026-01.
# Returns { subs => { name => sub }, expect => { "<sub-id>|<line>" =>
# [amount, currency] }, not_billed => { sub-id => calls } }.
sub setup_models {
    my ($r) = @_;
    my $t0 = ms('2025-12-01');
    $r->apply_catalog(models_catalog(), $t0);
    $r->put_developer('ann@example.com', { firstName => 'Ann', lastName => 'A',
        userName => 'ann' }, now => $t0);
    $r->put_developer('bob@example.com', { firstName => 'Bob', lastName => 'B',
        userName => 'bob' }, now => $t0);
    $r->put_appgroup('acme', { displayName => 'Acme' }, now => $t0);
    $r->put_appgroup('kappa', { displayName => 'Kappa' }, now => $t0);
    $r->set_customer('appgroup', 'kappa', 'cus_kappa', $t0);
    $r->set_customer('developer', 'ann@example.com', 'cus_ann', $t0);
    $r->set_customer('developer', 'bob@example.com', 'cus_bob', $t0);
    $r->set_customer('appgroup', 'acme', 'cus_acme', $t0);

    my (%subs, %expect, %nb);
    my $mk = sub {
        my ($name, $owner, $plan, $start, %o) = @_;
        my $s = $r->create_subscription(owner => $owner, product => 'geo',
            plan => $plan, now => ms($start), start => ms($start),
            owner_kind => $o{kind} // 'developer');
        $subs{$name} = $s;
        return $s;
    };
    my $jan = sub { ms('2026-01-' . $_[0]) };

    # flat 3100 usd / 31 days = 100 a day
    my $s = $mk->('flat_full', 'ann@example.com', 'geo-flat', '2025-12-15');
    $expect{"$s->{id}|fee"} = [3100, 'usd'];
    $s = $mk->('flat_late', 'bob@example.com', 'geo-flat', '2026-01-11T15:00');
    $expect{"$s->{id}|fee"} = [2100, 'usd'];            # 11th..31st: 21 days
    $s = $mk->('flat_cancel', 'ann@example.com', 'geo-flat', '2026-01-01');
    $r->set_state($s->{id}, 'cancel', now => ms('2026-01-20T12:00'));
    $expect{"$s->{id}|fee"} = [2000, 'usd'];            # 1st..20th: 20 days

    # metered: 7 usd cents per 10 calls, partial units up
    $s = $mk->('metered', 'bob@example.com', 'geo-metered', '2025-11-01');
    make_calls($r, $s, 25, $jan->('05T10:00'));
    $expect{"$s->{id}|usage"} = [21, 'usd'];            # 3 units
    $s = $mk->('metered_end', 'ann@example.com', 'geo-metered', '2025-11-01');
    make_calls($r, $s, 10, $jan->('05T10:00'));
    make_calls($r, $s, 7, $jan->('25T10:00'));
    $r->set_state($s->{id}, 'cancel', now => ms('2026-01-20T12:00'));
    $expect{"$s->{id}|usage"} = [7, 'usd'];             # 10 calls: 1 unit
    $nb{ $s->{id} } = 7;                                # after its end
    $s = $mk->('metered_zero', 'bob@example.com', 'geo-metered', '2025-11-01');

    # 1000 eur including 20 units, 5 per unit above
    $s = $mk->('overage', 'acme', 'geo-overage', '2025-10-01', kind => 'appgroup');
    make_calls($r, $s, 23, $jan->('07T00:00'));
    $expect{"$s->{id}|fee"} = [1000, 'eur'];
    $expect{"$s->{id}|overage"} = [15, 'eur'];

    # graduated: 10 x 10 + 100 flat, then 5 x 5
    $s = $mk->('graduated', 'ann@example.com', 'geo-graduated', '2025-10-01');
    make_calls($r, $s, 15, $jan->('31T23:59'));
    $expect{"$s->{id}|usage"} = [225, 'usd'];

    # volume: all 15 at the second tier, 6 each + 50
    $s = $mk->('volume', 'bob@example.com', 'geo-volume', '2025-10-01');
    make_calls($r, $s, 15, $jan->('01T00:00'));
    $expect{"$s->{id}|usage"} = [140, 'usd'];

    # package: 300 jpy per 10 calls, partial package counts
    # (a customer has one currency: this one is billed in yen)
    $s = $mk->('package', 'kappa', 'geo-package', '2025-10-01', kind => 'appgroup');
    make_calls($r, $s, 25, $jan->('15T12:00'));
    $expect{"$s->{id}|usage"} = [900, 'jpy'];

    # free: no lines; February start: not in the period
    $s = $mk->('free', 'ann@example.com', 'geo-free', '2025-10-01');
    make_calls($r, $s, 5, $jan->('10T00:00'));
    $mk->('february', 'ann@example.com', 'geo-flat', '2026-02-02');

    return { subs => \%subs, expect => \%expect, not_billed => \%nb };
}

# the stored items as "<sub-id>|<line>" → [amount, currency, item]
sub items_by_line {
    my ($stripe) = @_;
    my %got;
    for my $it ($stripe->items) {
        next unless defined $it->{metadata}{apimon_subscription};
        my $k = "$it->{metadata}{apimon_subscription}|$it->{metadata}{apimon_line}";
        die "duplicate item for $k\n" if $got{$k};
        $got{$k} = [ $it->{amount}, $it->{currency}, $it ];
    }
    return \%got;
}

# environment for a run against $r and $stripe
sub agent_env {
    my ($r, $stripe, %o) = @_;
    return { APIMON_REDIS => '127.0.0.1:' . $r->port,
        STRIPE_API_BASE => $stripe ? $stripe->url : 'http://127.0.0.1:9',
        STRIPE_API_KEY => $stripe ? $stripe->key : undef, %o };
}

1;
