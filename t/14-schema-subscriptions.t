#!/usr/bin/perl
# Owners, subscriptions (create, state machine, keys, view) and the billing
# ledger's compare-and-set.
use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP;
use Apimon::Redis;

my $r = Apimon::Redis->start;
*ms = \&Apimon::Redis::ms_utc;
my $T = ms('2027-02-01T09:00');
sub fails { my $code = shift; return eval { $code->(); 1 } ? 'no error' : $@ }
$r->apply_catalog(Apimon::Redis::catalog_fixture());

# --- owners
my $dev = $r->put_developer('ann@example.com', { firstName => 'Ann', lastName => 'Lee' }, now => $T);
is_deeply($dev, { email => 'ann@example.com', firstName => 'Ann', lastName => 'Lee', userName => '', customer => '',
                  createdAt => "$T", lastModifiedAt => "$T", ver => '1', status => 'active', attributes => '[]' },
          'developer created, times as strings');
is($r->cmd('ZSCORE', 'apimon:developers', 'ann@example.com'), 0, 'listed in apimon:developers');
like(fails(sub { $r->put_developer('ann@example.com', {}) }), qr/^ERR apimon conflict: /, 'create twice: conflict');
like(fails(sub { $r->put_developer('bob@example.com', {}, mode => 'update') }), qr/^ERR apimon not_found: /, 'update missing: not_found');
$dev = $r->put_developer('ann@example.com', { userName => 'ann', lastName => undef, createdAt => '1' }, mode => 'update', now => $T + 5);
is_deeply([ @$dev{qw(firstName lastName userName createdAt lastModifiedAt)} ], [ 'Ann', '', 'ann', "$T", $T + 5 ],
          'update: only given fields, null clears, createdAt read-only');
like(fails(sub { $r->put_developer('ann@example.com', { age => '3' }, mode => 'update') }), qr/^ERR apimon bad_request: age: unknown field/, 'unknown field');
like(fails(sub { $r->put_developer('ann@example.com', { email => 'x@y.z' }, mode => 'update') }), qr/bad_request: email: cannot be changed/, 'email is the id');
like(fails(sub { $r->put_developer('ann@example.com', { firstName => 5 }, mode => 'update') }), qr/bad_request: firstName: must be a string/, 'non-string');
like(fails(sub { $r->put_developer('not-an-email', {}) }), qr/bad_request: email/, 'bad email');
like(fails(sub { $r->put_developer('ann@example.com:subs', {}) }), qr/bad_request: email/, 'no ":" in emails (key names)');
like(fails(sub { $r->put_developer('a{b}@example.com', {}) }), qr/bad_request: email/, 'no braces in emails (hash tags)');
like(fails(sub { $r->set_customer('developer', 'ann@example.com:subs', 'cus_1') }), qr/not_found/, 'customer_set: bad id is not_found');
like(fails(sub { $r->run_script('owner_put', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'c@d.e'), '{', 'create' ]) }), qr/bad_request: body/, 'bad JSON body');
like(fails(sub { $r->run_script('owner_put', [], [ Apimon::Redis::mgmt_args(owner_kind => 'team', owner => 'x'), '{}', 'create' ]) }), qr/bad_request: kind/, 'bad kind');
like(fails(sub { $r->run_script('owner_put', [], [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'c@d.e'), '{}', 'upsert' ]) }), qr/bad_request: mode/, 'bad mode');
my $ag = $r->put_appgroup('team-1', { displayName => 'Team One' }, now => $T);
is_deeply([ @$ag{qw(name displayName customer)} ], [ 'team-1', 'Team One', '' ], 'app group created');
is($r->cmd('ZSCORE', 'apimon:appgroups', 'team-1'), 0, 'listed in apimon:appgroups');
like(fails(sub { $r->put_appgroup('team 1', {}) }), qr/bad_request: name/, 'app group name checked');
like(fails(sub { $r->put_appgroup('team-2', { firstName => 'x' }) }), qr/unknown field/, 'developer fields are not app group fields');

is($r->set_customer('developer', 'ann@example.com', 'cus_123', $T + 9)->{customer}, 'cus_123', 'customer_set');
is($r->cmd('HGET', 'apimon:developer:ann@example.com', 'lastModifiedAt'), $T + 9, 'customer_set touches lastModifiedAt');
is($r->set_customer('appgroup', 'team-1', 'cus_9')->{customer}, 'cus_9', 'customer_set on an app group');
like(fails(sub { $r->set_customer('developer', 'nobody@example.com', 'cus_1') }), qr/^ERR apimon not_found/, 'customer_set: not_found');
like(fails(sub { $r->set_customer('developer', 'ann@example.com', 'cus 1') }), qr/bad_request/, 'customer id with a space');

# --- subscription_create
my $s = $r->create_subscription(owner => 'ann@example.com', product => 'weather', plan => 'weather-bronze', now => $T);
my %want = (id => $s->{id}, owner_kind => 'developer', owner => 'ann@example.com', product => 'weather',
            plan => 'weather-bronze', state => 'active', startTime => "$T", endTime => '0', createdAt => "$T",
            lastModifiedAt => "$T", apis => ',forecast,history,', rate_n => '5', rate_w => '1', quota_n => '1000',
            quota_unit => 'month', ver => '1', attributes => '[]');
is_deeply($s->{reply}, \%want, 'created: reply without key digests');
is_deeply($r->cmd('HMGET', $s->{key}, 'kp', 'ks'),
          [ Apimon::Redis::key_digest($s->{primary}), Apimon::Redis::key_digest($s->{secondary}) ], 'digests stored');
ok($r->cmd('SISMEMBER', 'apimon:subs', $s->{id}), 'in apimon:subs');
ok($r->cmd('SISMEMBER', 'apimon:plan:weather-bronze:subs', $s->{id}), 'in the plan index');
is($r->cmd('ZSCORE', 'apimon:developer:ann@example.com:subs', $s->{id}), $T, 'in the owner index, score createdAt');
my $g = $r->create_subscription(owner_kind => 'appgroup', owner => 'team-1', product => 'weather', plan => 'weather-gold',
                                now => $T, start => $T + 1000, secondary => 0);
is($g->{reply}{state}, 'submitted', 'manual approval: submitted');
is($g->{reply}{startTime}, $T + 1000, 'explicit startTime');
is($r->cmd('HGET', $g->{key}, 'ks'), '', 'no secondary key');
is($r->cmd('ZSCORE', 'apimon:appgroup:team-1:subs', $g->{id}), $T, 'app group index');

my %base = (owner => 'ann@example.com', product => 'weather', plan => 'weather-bronze');
like(fails(sub { $r->create_subscription(%base, owner => 'zed@example.com') }), qr/^ERR apimon not_found: no such developer/, 'unknown owner');
like(fails(sub { $r->create_subscription(%base, owner_kind => 'appgroup', owner => 'ann@example.com') }), qr/not_found/, 'owner of the other kind');
like(fails(sub { $r->create_subscription(%base, product => 'radio') }), qr/^ERR apimon not_found: no such product/, 'unknown product');
like(fails(sub { $r->create_subscription(%base, plan => 'platinum') }), qr/^ERR apimon not_found: no such plan/, 'unknown plan');
like(fails(sub { $r->create_subscription(%base, plan => 'maps-basic') }), qr/^ERR apimon bad_request: plan maps-basic is not a plan of product weather/, 'plan of another product');
like(fails(sub { $r->create_subscription(%base, id => $s->{id}) }), qr/^ERR apimon conflict/, 'existing id');
like(fails(sub { $r->create_subscription(%base, id => uc Apimon::Redis::new_uuid()) }), qr/bad_request: id/, 'uppercase id');
my $id = Apimon::Redis::new_uuid();
like(fails(sub { $r->run_script('subscription_create', [ Apimon::Redis::sub_key(Apimon::Redis::new_uuid()) ],
                 [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'ann@example.com'), $id, 'weather', 'weather-bronze', 'a' x 64, '', 0 ]) }),
     qr/bad_request: key does not match id/, 'KEYS[1] must be the id\'s hash');
like(fails(sub { $r->run_script('subscription_create', [ Apimon::Redis::sub_key($id) ],
                 [ Apimon::Redis::mgmt_args(owner_kind => 'developer', owner => 'ann@example.com'), $id, 'weather', 'weather-bronze', 'xyz', '', 0 ]) }),
     qr/bad_request: primary key digest/, 'bad digest');
is($r->cmd('EXISTS', Apimon::Redis::sub_key($id)), 0, 'refused creates write nothing');

# --- state machine: every action from every state
my %to = (activate => 'active', suspend => 'suspended', resume => 'active', cancel => 'cancelled', expire => 'expired');
my %from = (activate => [ 'submitted' ], suspend => [ 'active' ], resume => [ 'suspended' ],
            cancel => [ qw(submitted active suspended) ], expire => [ qw(submitted active suspended) ]);
my %path = (submitted => [], active => [ 'activate' ], suspended => [ 'activate', 'suspend' ],
            cancelled => [ 'cancel' ], expired => [ 'expire' ]);
for my $state (qw(submitted active suspended cancelled expired)) {
    for my $action (qw(activate suspend resume cancel expire)) {
        my $x = $r->create_subscription(owner => 'ann@example.com', product => 'weather', plan => 'weather-gold', now => $T);
        $r->set_state($x->{id}, $_, now => $T) for @{ $path{$state} };
        is($r->cmd('HGET', $x->{key}, 'state'), $state, "setup: $state") if $action eq 'activate';
        if (grep { $_ eq $state } @{ $from{$action} }) {
            my $v = $r->set_state($x->{id}, $action, now => $T + 60000, owner_kind => 'developer', owner => 'ann@example.com');
            is($v->{state}, $to{$action}, "$action from $state -> $to{$action}");
            is($v->{lastModifiedAt}, $T + 60000, "$action from $state: lastModifiedAt");
            my $end = ($action eq 'cancel' || $action eq 'expire') ? $T + 60000 : 0;
            is($v->{endTime}, $end, "$action from $state: endTime $end");
        } else {
            like(fails(sub { $r->set_state($x->{id}, $action, now => $T) }),
                 qr/^ERR apimon conflict: cannot $action a subscription that is $state/, "$action from $state: conflict");
        }
    }
}
like(fails(sub { $r->set_state($s->{id}, 'pause') }), qr/bad_request: unknown action/, 'unknown action');
like(fails(sub { $r->set_state(Apimon::Redis::new_uuid(), 'cancel') }), qr/^ERR apimon not_found/, 'missing subscription');
like(fails(sub { $r->set_state($s->{id}, 'suspend', owner_kind => 'developer', owner => 'bob@example.com') }),
     qr/^ERR apimon not_found/, 'another owner: not_found');
like(fails(sub { $r->set_state($s->{id}, 'suspend', owner_kind => 'appgroup', owner => 'ann@example.com') }),
     qr/^ERR apimon not_found/, 'owner kind must match too');
is($r->cmd('HGET', $s->{key}, 'state'), 'active', 'untouched');

# cancel: endTime = now if open or later, kept if earlier
my $c1 = $r->create_subscription(%base, now => $T);
$r->cmd('HSET', $c1->{key}, 'endTime', $T + 86400000);
is($r->set_state($c1->{id}, 'cancel', now => $T + 5)->{endTime}, $T + 5, 'cancel: later endTime pulled to now');
my $c2 = $r->create_subscription(%base, now => $T);
$r->cmd('HSET', $c2->{key}, 'endTime', $T + 3);
is($r->set_state($c2->{id}, 'cancel', now => $T + 5)->{endTime}, $T + 3, 'cancel: earlier endTime kept');
my $c3 = $r->create_subscription(%base, now => $T);
$r->cmd('HSET', $c3->{key}, 'endTime', $T + 86400000);
is($r->set_state($c3->{id}, 'expire', now => $T + 5)->{endTime}, $T + 5, 'expire: endTime = now');

# --- keys: rotation stops the old key at once
my $k = $r->create_subscription(%base, now => $T);
my $now = ms('2027-02-02');
is($r->check(key => $k->{primary}, api => 'forecast', now => $now)->{result}, 'allowed', 'primary works');
my $new = $r->set_key($k->{id}, 'primary', now => $now, owner_kind => 'developer', owner => 'ann@example.com');
is($r->check(key => $k->{primary}, api => 'forecast', now => $now)->{result}, 'invalid_key', 'old primary refused at once');
is($r->check(key => $new, api => 'forecast', now => $now)->{result}, 'allowed', 'new primary works');
is($r->check(key => $k->{secondary}, api => 'forecast', now => $now)->{result}, 'allowed', 'secondary untouched');
$r->set_key($k->{id}, 'secondary', key => '');
is($r->check(key => $k->{secondary}, api => 'forecast', now => $now)->{result}, 'invalid_key', 'secondary revoked');
is($r->cmd('HGET', $k->{key}, 'ks'), '', 'ks empty');
like(fails(sub { $r->set_key($k->{id}, 'primary', key => '') }), qr/bad_request: digest/, 'primary cannot be emptied');
like(fails(sub { $r->set_key($k->{id}, 'tertiary') }), qr/bad_request: slot/, 'bad slot');
like(fails(sub { $r->set_key($k->{id}, 'primary', owner_kind => 'developer', owner => 'x@y.z') }), qr/not_found/, 'wrong owner');
my $json = $r->run_script('subscription_key', [ $k->{key} ], [ Apimon::Redis::mgmt_args(now => $now), 'secondary', 'b' x 64 ]);
unlike($json, qr/"k[ps]"/, 'reply carries no digests');
$r->set_state($k->{id}, 'cancel', now => $now);
like(fails(sub { $r->set_key($k->{id}, 'primary') }), qr/^ERR apimon conflict: subscription is cancelled/, 'no new keys on a cancelled subscription');

# --- view
my $v = $r->create_subscription(%base, now => $T);
$r->check(key => $v->{primary}, api => 'forecast', now => ms('2027-02-10')) for 1 .. 3;
my $view = $r->view_subscription($v->{id}, now => ms('2027-02-20'), owner_kind => 'developer', owner => 'ann@example.com');
is_deeply($view->{quota}, { limit => '1000', used => '3', remaining => '997', periodStart => '' . ms('2027-02-01'),
                            periodEnd => '' . ms('2027-03-01'), remainingMs => '' . (ms('2027-03-01') - ms('2027-02-20')) },
          'view: quota numbers');
is($view->{state}, 'active', 'view: the subscription');
ok(!exists $view->{kp} && !exists $view->{ks}, 'view: no digests');
like(fails(sub { $r->view_subscription($v->{id}, owner_kind => 'developer', owner => 'bob@example.com') }), qr/not_found/, 'view: wrong owner');
$r->apply_catalog(do {
    my $d = JSON::PP->new->decode(Apimon::Redis::catalog_fixture());
    delete $_->{quota} for @{ $d->{plans} };
    JSON::PP->new->encode($d);
});
my $raw = $r->run_script('subscription_view', [ $v->{key} ], [ Apimon::Redis::mgmt_args(now => ms('2027-02-20')) ]);
like($raw, qr/"quota":\{\}/, 'plan without quota: quota is {}');

# --- billing ledger compare-and-set
my $L = '202702';
my $field = "$s->{id}|fee";
my $line = sub { JSON::PP->new->canonical->encode({ state => $_[0], key => 'k1', body => 'amount=2900', updated_ms => "$T" }) };
is($r->billing_line($L, $field, '', $line->('computed'), $T), 1, 'absent -> computed');
like(fails(sub { $r->billing_line($L, $field, '', $line->('computed')) }), qr/^ERR apimon conflict: line .* is computed, expected absent/, 'second agent: conflict');
is($r->billing_line($L, $field, 'computed', $line->('posted')), 1, 'computed -> posted');
like(fails(sub { $r->billing_line($L, $field, 'computed', $line->('posted')) }), qr/^ERR apimon conflict/, 'posting twice: conflict');
is($r->billing_line($L, $field, 'posted', $line->('done')), 1, 'posted -> done');
is($r->cmd('HGET', "apimon:bill:$L", $field), $line->('done'), 'stored exactly as given');
like(fails(sub { $r->billing_line($L, $field, 'done', '{"state":"paid"}') }), qr/bad_request/, 'unknown state');
like(fails(sub { $r->billing_line($L, $field, 'done', 'nope') }), qr/bad_request/, 'not JSON');
like(fails(sub { $r->billing_line($L, 'nofield', '', $line->('computed')) }), qr/bad_request: field/, 'field shape');
like(fails(sub { $r->run_script('billing_line', [ 'apimon:bill:2027' ], [ $field, '', $line->('computed'), 0 ]) }),
     qr/bad_request: not a ledger key/, 'ledger key shape');
is($r->billing_line($L, "$s->{id}|usage", '', $line->('failed')), 1, 'another line is independent');

# two agents racing on one line: exactly one wins
my $race = "$g->{id}|fee";
my @won = grep { eval { $r->billing_line($L, $race, '', $line->('computed')); 1 } } 1 .. 2;
is(scalar @won, 1, 'one winner');

done_testing;
