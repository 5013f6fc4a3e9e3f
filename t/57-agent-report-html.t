#!/usr/bin/perl
# --report-html FILE (bill, bill --dry-run) and `billing-agent report
# --period`: one self-contained page whose totals per currency, per
# currency and plan, and per customer equal the CSV report's; money in
# major units; usage charted per subscription per day; refusals by reason;
# every text from Redis escaped.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Redis;
use Apimon::Stripe;
use Apimon::Agent qw(run_agent setup_models agent_env);
use File::Temp qw(tempdir);

plan skip_all => 'billing-agent not built' unless -x Apimon::Agent::agent_bin();

my $r = Apimon::Redis->start;
my $stripe = Apimon::Stripe->start;
my $m = setup_models($r);
my $env = agent_env($r, $stripe);
my $dir = tempdir(CLEANUP => 1);

# refusals of one subscription, one with a reason that is markup
my $sid = $m->{subs}{metered}{id};
$r->cmd('HINCRBY', "apimon:sub:{$sid}:usage:202601", '20260105|lookup|rate_limited', 4);
$r->cmd('HINCRBY', "apimon:sub:{$sid}:usage:202601", '20260106|lookup|<b>x</b>', 2);

my %major = (usd => 2, eur => 2, jpy => 0);
sub major {
    my ($minor, $cur) = @_;
    my $e = $major{$cur};
    return "$minor $cur" unless $e;
    return sprintf('%s%d.%0*d %s', $minor < 0 ? '-' : '', abs($minor) / 10**$e, $e,
        abs($minor) % 10**$e, $cur);
}

# the CSV's billed totals: [per currency, per "cur|plan", per "cus|cur"]
sub csv_totals {
    my ($file) = @_;
    open my $f, '<', $file or die "$file: $!";
    my $head = <$f>;
    my (%cur, %plan, %cust, %status);
    while (my $l = <$f>) {
        chomp $l;
        my @c = split /,/, $l, -1;
        my ($cus, $plan, $line, $amt, $cu, $st) = @c[2, 4, 6, 8, 9, 10];
        $status{ $line eq 'invoice' ? "invoice $st" : $st }++;
        next if $line eq 'invoice' || $st !~ /^(?:done|posted|dry_run|dry_run_resume)$/;
        $cur{$cu} += $amt;
        $plan{"$cu|$plan"} += $amt;
        $cust{"$cus|$cu"} += $amt;
    }
    return (\%cur, \%plan, \%cust, \%status);
}

sub html_table {
    my ($html, $id) = @_;
    my ($t) = $html =~ m{<table id=$id>(.*?)</table>}s or return {};
    my %v;
    while ($t =~ m{<tr><td>([^<]*)</td><td>([^<]*)</td><td class=n>\d+</td><td class=m data-minor="(-?\d+)">([^<]*)</td></tr>}g) {
        $v{"$1|$2"} = [ $3, $4 ];
    }
    return \%v;
}

sub check_html {
    my ($name, $html, $csv) = @_;
    my ($cur, $plan, $cust, $status) = csv_totals($csv);
    ok(scalar keys %$cur >= 3, "$name: the CSV bills three currencies");
    my %cards = reverse($html =~ m{<div class=card data-minor="(-?\d+)">billed<b>([^<]*)</b>}g);
    is_deeply({ map { (split / /, $_)[1] => $cards{$_} } keys %cards }, $cur,
        "$name: billed per currency = the CSV's");
    is_deeply([ sort keys %cards ], [ sort map { major($cur->{$_}, $_) } keys %$cur ],
        "$name: shown in major units");
    my $t = html_table($html, 'totals');
    is_deeply({ map { $_ => $t->{$_}[0] } keys %$t }, $plan, "$name: per currency and plan = CSV");
    ok(!grep({ $t->{$_}[1] ne major($t->{$_}[0], (split /\|/, $_)[0]) } keys %$t),
        "$name: plan totals in major units");
    $t = html_table($html, 'customers');
    is_deeply({ map { $_ => $t->{$_}[0] } keys %$t }, $cust, "$name: per customer = CSV");
    my ($ot) = $html =~ m{<table id=outcomes>(.*?)</table>}s;
    my %out = $ot =~ m{<tr><td>([\w ]+)</td><td class=n>(\d+)</td></tr>}g;
    is_deeply(\%out, $status, "$name: outcome counts = CSV");
    like($html, qr{<td>rate_limited</td><td class=n>4</td>}, "$name: refusals by reason");
    like($html, qr{<td>&lt;b&gt;x&lt;/b&gt;</td><td class=n>2</td>}, "$name: the reason is escaped");
    unlike($html, qr{<b>x}, "$name: no raw markup from Redis");
    like($html, qr{<h3>\Q$sid\E \(geo-metered, cus_bob\): 25 calls, at most 25 a day</h3>\n<svg }, "$name: a usage chart");
    like($html, qr{<title>day 5: 25</title>}, "$name: the day's bar");
    unlike($html, qr{<script|\bsrc=|\bhref=|https?://}i, "$name: self-contained, no script");
    like($html, qr{<table id=largest>.*?<td class=m data-minor="3100">31\.00 usd</td>}s,
        "$name: the largest lines");
}

sub slurp { local $/; open my $f, '<', $_[0] or die "$_[0]: $!"; return <$f> }

# a dry run
my $run = run_agent(env => { %$env, STRIPE_API_KEY => undef }, args => ['bill',
    '--period', '2026-01', '--dry-run', '--report', "$dir/dry.csv", '--report-html', "$dir/dry.html"]);
is($run->{rc}, 0, 'dry run: exit 0') or diag $run->{err};
check_html('dry run', slurp("$dir/dry.html"), "$dir/dry.csv");

# the run that posts
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--max-rps', '1000',
    '--create-invoices', '--report', "$dir/run.csv", '--report-html', "$dir/run.html"]);
is($run->{rc}, 0, 'bill: exit 0') or diag $run->{err};
my $html = slurp("$dir/run.html");
check_html('bill', $html, "$dir/run.csv");
like($html, qr{<tr><td>invoice done</td><td class=n>4</td></tr>}, 'bill: the invoices counted apart');
diag sprintf('HTML report: %d bytes', length $html);

# `report`: from the ledger, posting nothing, no secret
my $n = () = $stripe->requests;
$run = run_agent(env => { %$env, STRIPE_API_KEY => undef }, args => ['report', '--period',
    '2026-01', '--report', "$dir/rep.csv", '--report-html', "$dir/rep.html"]);
is($run->{rc}, 0, 'report: exit 0') or diag $run->{err};
is($run->{out}, '', 'report: prints no request');
is(scalar(() = $stripe->requests), $n, 'report: no API request');
check_html('report', slurp("$dir/rep.html"), "$dir/rep.csv");
like(slurp("$dir/rep.csv"), qr/,done,/, 'report: the ledger\'s states');
$run = run_agent(env => $env, args => ['report']);
is($run->{rc}, 2, 'report without --period: usage error');
like($run->{err}, qr/--period/, 'report without --period: says so');

# an unwritable path: a clear error, nothing posted
$run = run_agent(env => $env, args => ['bill', '--period', '2026-01', '--report-html',
    "$dir/none/x.html"]);
is($run->{rc}, 2, 'unwritable: exit 2');
like($run->{err}, qr{cannot write the HTML report \Q$dir\E/none/x\.html}, 'unwritable: names the file');

done_testing;
