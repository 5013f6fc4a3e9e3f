package Apimon::Stripe;

# Starts t/stripe-server (the Stripe-compatible test server) on a free port
# and talks to its control endpoints.
#
#   my $s = Apimon::Stripe->start(key => 'sk_test_x');
#   $ENV{STRIPE_API_BASE} = $s->url;
#   $s->fault('500_after_store', count => 1);
#   my @items = $s->items;            # everything stored, oldest first
#   $s->stop;                         # also on DESTROY

use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);

my $server = File::Spec->rel2abs(dirname(__FILE__) . '/../../stripe-server');

sub start {
    my ($class, %o) = @_;
    my $key = $o{key} // 'sk_test_' . join('', map { ('a'..'z', 0..9)[rand 36] } 1..24);
    my $dir = tempdir(CLEANUP => 1);
    my ($pid, $port) = spawn_server($server, $dir, '--key', $key);
    my $self = bless { pid => $pid, port => $port, key => $key, dir => $dir,
        http => HTTP::Tiny->new(timeout => 10) }, $class;
    return $self;
}

# forks and execs a test server script (it writes its port to --port-file)
# in dir; returns (pid, port). Shared with Apimon::Webhook.
sub spawn_server {
    my ($script, $dir, @args) = @_;
    my $pf = "$dir/port";
    my $log = "$dir/server.log";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', $log;
        open STDERR, '>&', \*STDOUT;
        exec $^X, $script, @args, '--port-file', $pf;
        exit 127;
    }
    for (1 .. 200) {
        last if -s $pf;
        sleep 0.025;
    }
    open my $f, '<', $pf or die "$script did not start (see $log)\n";
    chomp(my $port = <$f>);
    close $f;
    return ($pid, $port);
}

sub url  { return 'http://127.0.0.1:' . $_[0]{port} }
sub key  { return $_[0]{key} }
sub port { return $_[0]{port} }

sub _post {
    my ($self, $path, %form) = @_;
    my $r = $self->{http}->post_form($self->url . $path, \%form);
    die "stripe-server $path: $r->{status} $r->{content}\n" unless $r->{success};
    return decode_json($r->{content});
}

# type: 500_after_store | 500 | 429 | drop | drop_after_store | slow
sub fault {
    my ($self, $type, %o) = @_;
    return $self->_post('/_fault', type => $type, count => $o{count} // 1,
        seconds => $o{seconds} // 0, after => $o{after} // 0, path => $o{path} // '/v1/invoiceitems',
        method => $o{method} // 'POST');
}

sub reset { $_[0]->_post('/_reset') }

# waits (up to 10 s) until a request met an injected 'slow' fault
sub wait_slow {
    my ($self) = @_;
    my $t0 = Time::HiRes::time();
    while (Time::HiRes::time() - $t0 < 10) {
        return 1 if grep { ($_->{fault} // '') eq 'slow' } $self->requests;
        sleep 0.05;
    }
    return 0;
}

# forgets every idempotency key, as Stripe does after 24 hours
sub forget_keys { $_[0]->_post('/_forget_keys') }

# an authenticated API POST (as another integration of the customer would
# make): the decoded answer
sub api_post {
    my ($self, $path, %form) = @_;
    my $r = $self->{http}->post_form($self->url . $path, \%form,
        { headers => { Authorization => "Bearer $self->{key}" } });
    return decode_json($r->{content});
}

sub dump {
    my ($self) = @_;
    my $r = $self->{http}->get($self->url . '/_dump');
    die "stripe-server dump: $r->{status}\n" unless $r->{success};
    return decode_json($r->{content});
}

sub items    { return @{ $_[0]->dump->{items} } }
sub invoices { return @{ $_[0]->dump->{invoices} } }
sub requests { return @{ $_[0]->dump->{requests} } }

# items whose metadata[apimon_key] is the same: key → count
sub key_counts {
    my ($self) = @_;
    my %n;
    $n{ $_->{metadata}{apimon_key} // '' }++ for $self->items;
    return \%n;
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    local ($?, $!);     # called from DESTROY: keep the test's exit status
    kill 'TERM', $self->{pid};
    waitpid $self->{pid}, 0;
    delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

1;
