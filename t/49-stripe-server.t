#!/usr/bin/perl
# The Stripe-compatible test server itself: auth, validation, bracketed
# form bodies, listing with pagination, idempotent replay and conflicts,
# invoices, injected faults.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Apimon::Stripe;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time);

my $s = Apimon::Stripe->start(key => 'sk_test_server');
my $h = HTTP::Tiny->new(timeout => 5);
my $auth = { Authorization => 'Bearer sk_test_server' };

sub post {
    my ($path, $form, %hdr) = @_;
    my $r = $h->post_form($s->url . $path, $form, { headers => { %$auth, %hdr } });
    return ($r, eval { decode_json($r->{content}) });
}
sub get {
    my ($path) = @_;
    my $r = $h->get($s->url . $path, { headers => $auth });
    return ($r, eval { decode_json($r->{content}) });
}

# auth
my $r = $h->get($s->url . '/v1/invoiceitems');
is($r->{status}, 401, 'no key: 401');
is(decode_json($r->{content})->{error}{type}, 'invalid_request_error', 'Stripe-shaped error');
$r = $h->get($s->url . '/v1/invoiceitems', { headers => { Authorization => 'Bearer sk_test_wrong_key_1234' } });
is($r->{status}, 401, 'wrong key: 401');
like($r->{content}, qr/sk_test_\*+1234/, 'the key is masked in the message');

# validation
my ($x, $j) = post('/v1/invoiceitems', { amount => 5, currency => 'usd' });
is($x->{status}, 400, 'customer required');
is($j->{error}{param}, 'customer', 'param named');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_1', amount => '5.5', currency => 'usd' });
is($j->{error}{code}, 'parameter_invalid_integer', 'integer amount');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_1', amount => 5, currency => 'USD' });
is($x->{status}, 400, 'lowercase currency');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_1', amount => 5, currency => 'usd', 'period[start]' => 1 });
is($x->{status}, 400, 'period start without end');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_1', amount => 5, currency => 'usd', unit_amount => 5 });
is($j->{error}{code}, 'parameter_unknown', 'unknown parameter');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_1', amount => 5, currency => 'usd',
    'metadata[' . ('k' x 41) . ']' => 'v' });
is($x->{status}, 400, 'metadata key over 40 characters');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_1', amount => 5, currency => 'usd',
    'metadata[k]' => 'v' x 501 });
is($x->{status}, 400, 'metadata value over 500 characters');

# a stored item, with bracketed keys decoded
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_1', amount => -7, currency => 'eur',
    description => 'a & b = c', 'period[start]' => 10, 'period[end]' => 20, 'metadata[apimon_key]' => 'k0' });
is($x->{status}, 200, 'created');
like($j->{id}, qr/^ii_/, 'ii_ id');
is_deeply([ @$j{qw(amount currency description)}, $j->{period}, $j->{metadata} ],
    [ -7, 'eur', 'a & b = c', { start => 10, end => 20 }, { apimon_key => 'k0' } ], 'fields decoded');

($x, $j) = post('/v1/invoiceitems', { customer => 'cus_1', amount => 5, currency => 'usd' });
is($x->{status}, 400, 'a customer keeps one currency');
like($j->{error}{message}, qr/combine currencies/, 'as Stripe words it');

# idempotency
my %f = (customer => 'cus_2', amount => 100, currency => 'usd');
my ($a1, $ja) = post('/v1/invoiceitems', \%f, 'Idempotency-Key' => 'K1');
my ($a2, $jb) = post('/v1/invoiceitems', \%f, 'Idempotency-Key' => 'K1');
is($jb->{id}, $ja->{id}, 'replay returns the same item');
is($a2->{headers}{'idempotent-replayed'}, 'true', 'Idempotent-Replayed: true');
my ($a3, $jc) = post('/v1/invoiceitems', { %f, amount => 101 }, 'Idempotency-Key' => 'K1');
is($a3->{status}, 400, 'same key, other params: 400');
is($jc->{error}{type}, 'idempotency_error', 'idempotency_error');

# listing, newest first, pages
post('/v1/invoiceitems', { customer => 'cus_3', amount => $_, currency => 'usd' }) for 1 .. 25;
my ($l, $p1) = get('/v1/invoiceitems?customer=cus_3&limit=10');
is(scalar @{ $p1->{data} }, 10, 'page of 10');
ok($p1->{has_more}, 'has_more');
is($p1->{data}[0]{amount}, 25, 'newest first');
my (@all, $after);
while (1) {
    my ($lr, $pg) = get('/v1/invoiceitems?customer=cus_3&limit=10' . ($after ? "&starting_after=$after" : ''));
    push @all, @{ $pg->{data} };
    last unless $pg->{has_more};
    $after = $pg->{data}[-1]{id};
}
is_deeply([ map { $_->{amount} } @all ], [ reverse 1 .. 25 ], 'starting_after walks every item once');

# faults
$s->fault('500_after_store');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_4', amount => 1, currency => 'usd' }, 'Idempotency-Key' => 'F1');
is($x->{status}, 500, '500 after store');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_4', amount => 1, currency => 'usd' }, 'Idempotency-Key' => 'F1');
is($x->{status}, 500, 'the 500 is replayed for the key');
is(scalar(grep { $_->{customer} eq 'cus_4' } $s->items), 1, 'and the item was stored once');
$s->fault('429', count => 1);
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_5', amount => 1, currency => 'usd' }, 'Idempotency-Key' => 'F2');
is($x->{status}, 429, 'rate limited: 429');
is($x->{headers}{'stripe-should-retry'}, 'true', 'Stripe-Should-Retry: true');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_5', amount => 1, currency => 'usd' }, 'Idempotency-Key' => 'F2');
is($x->{status}, 200, 'a 429 is not stored for the key');
$s->fault('drop');
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_6', amount => 1, currency => 'usd' });
is($x->{status}, 599, 'dropped connection');
my $t0 = time;
$s->fault('slow', seconds => 1);
($x, $j) = post('/v1/invoiceitems', { customer => 'cus_6', amount => 1, currency => 'usd' });
ok(time - $t0 >= 0.9 && $x->{status} == 200, 'slow answer');

# invoices
($x, $j) = post('/v1/invoices', { customer => 'cus_3', pending_invoice_items_behavior => 'include' },
    'Idempotency-Key' => 'I1');
is($x->{status}, 200, 'invoice created');
is(scalar @{ $j->{lines} }, 25, 'with the pending items');
is($j->{total}, 325, 'total');
my ($x2, $j2) = post('/v1/invoices', { customer => 'cus_3', pending_invoice_items_behavior => 'include' },
    'Idempotency-Key' => 'I1');
is($j2->{id}, $j->{id}, 'invoice replayed');
is(scalar($s->invoices), 1, 'one invoice');

done_testing;
