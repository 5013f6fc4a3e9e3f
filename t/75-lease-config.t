#!/usr/bin/perl
# apimon_lease: bad values are refused naming the directive, the value, the
# file and line; accepted forms start; the zone survives a reload (same
# size) and a changed size is a new configuration nginx takes.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Apimon::Redis;
use Apimon::Nginx;

my $r = Apimon::Redis->start;
$r->apply_catalog(Apimon::Nginx::enforcement_catalog());
my $key = Apimon::Nginx::subscribe($r, 'open')->{primary};
my $loc = "        location /x/ { apimon on; apimon_api forecast; proxy_pass http://backend; }\n";

my @bad = (
    [ 'apimon_lease;', qr/invalid number of arguments in "apimon_lease" directive/ ],
    [ 'apimon_lease x;', qr/"apimon_lease": invalid size "x", expected at least \d+k or "off"/ ],
    [ 'apimon_lease 4k;', qr/"apimon_lease": invalid size "4k"/ ],
    [ 'apimon_lease off calls=4;', qr/"apimon_lease": "off" takes no parameters/ ],
    [ 'apimon_lease 1m calls=0;', qr/"apimon_lease": invalid "calls=0", expected calls=1\.\.64/ ],
    [ 'apimon_lease 1m calls=65;', qr/"apimon_lease": invalid "calls=65"/ ],
    [ 'apimon_lease 1m calls=x;', qr/"apimon_lease": invalid "calls=x"/ ],
    [ 'apimon_lease 1m time=5ms;', qr/"apimon_lease": invalid "time=5ms", expected a time from 10ms to 10s/ ],
    [ 'apimon_lease 1m time=11s;', qr/"apimon_lease": invalid "time=11s"/ ],
    [ 'apimon_lease 1m flush=x;', qr/"apimon_lease": invalid "flush=x", expected a time from 10ms to 10s/ ],
    [ 'apimon_lease 1m size=2;', qr/"apimon_lease": invalid parameter "size=2", expected calls=, time= or flush=/ ],
    [ 'apimon_lease 1m calls=4 calls=5;', qr/"apimon_lease": "calls=5": the parameter is given twice/ ],
    [ 'apimon_lease 1m time=1s time=2s;', qr/"apimon_lease": "time=2s": the parameter is given twice/ ],
    [ 'apimon_lease 1m time=100ms flush=200ms;',
      qr/"apimon_lease": flush=200ms is longer than the lease time=100ms/ ],
    [ 'apimon_lease 1m; apimon_lease off;', qr/"apimon_lease" directive is duplicate/ ],
);
for my $case (@bad) {
    my ($conf, $want) = @$case;
    my $n = Apimon::Nginx->new(workers => 1);
    my $started = eval { $n->start(redis => $r, http => $conf, server => $loc); 1 };
    $n->stop if $started;
    ok(!$started, "$conf: refused");
    like($@, $want, "$conf: the message names the directive and the value");
    like($@, qr/in \S+nginx\.conf:\d+/, "$conf: with file and line");
}

# in a server block it is not allowed: one zone per http{}
{
    my $n = Apimon::Nginx->new(workers => 1);
    my $started = eval { $n->start(redis => $r, server => "apimon_lease 1m;\n$loc"); 1 };
    $n->stop if $started;
    ok(!$started, 'apimon_lease in server{}: refused');
    like($@, qr/"apimon_lease" directive is not allowed here/, 'apimon_lease in server{}: the message');
}

for my $conf ('apimon_lease off;', 'apimon_lease 1m;', 'apimon_lease 256k calls=8 time=500ms flush=50ms;') {
    my $n = Apimon::Nginx->new(workers => 2);
    ok(eval { $n->start(redis => $r, http => $conf, server => $loc); 1 }, "$conf: accepted") or diag $@;
    is($n->get('/x/a', 'X-API-Key' => $key)->{status}, 200, "$conf: a call is served");
    ok($n->reload, "$conf: reload with the same zone");
    is($n->get('/x/a', 'X-API-Key' => $key)->{status}, 200, "$conf: served after the reload");
    $n->stop;
    is_deeply([ $n->alerts ], [], "$conf: no alerts");
}

# a new size on reload: nginx makes a new zone, the reload is taken
{
    my $n = Apimon::Nginx->new(workers => 1);
    $n->start(redis => $r, http => 'apimon_lease 1m;', server => $loc);
    ok($n->reload(redis => $r, http => 'apimon_lease 2m;', server => $loc), 'a new size: reloaded');
    is($n->get('/x/a', 'X-API-Key' => $key)->{status}, 200, 'a new size: served');
    $n->stop;
}

done_testing;
