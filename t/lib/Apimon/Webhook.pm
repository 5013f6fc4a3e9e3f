package Apimon::Webhook;
# Starts t/webhook-server (the webhook receiver of billing-agent notify's
# tests) on a free port with a fresh signing secret, and talks to its
# control endpoints.
#
#   my $w = Apimon::Webhook->start;
#   $w->url('/hooks')             # http://127.0.0.1:<port>/hooks
#   $w->secret_file               # owner-only file holding the secret
#   $w->fault(status => 500, count => 1);   # or type => 'slow', seconds => 3
#   my @req = $w->requests;       # { body, signature, event_id, verified, answered }
#   $w->stop;                     # also on DESTROY
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use Apimon::Stripe;

my $server = File::Spec->rel2abs(dirname(__FILE__) . '/../../webhook-server');

sub start {
    my ($class, %o) = @_;
    my $dir = tempdir(CLEANUP => 1);
    my $secret = $o{secret} // 'whsec_' . join('', map { ('a'..'z', 0..9)[rand 36] } 1..32);
    my $sf = "$dir/hook.secret";
    open my $f, '>', $sf or die "$sf: $!";
    print $f "$secret\n";
    close $f;
    chmod 0600, $sf;
    my ($pid, $port) = Apimon::Stripe::spawn_server($server, $dir, '--secret-file', $sf,
                                                    ($o{port} ? ('--port', $o{port}) : ()));
    return bless { pid => $pid, port => $port, secret => $secret, secret_file => $sf, dir => $dir,
                   http => HTTP::Tiny->new(timeout => 30) }, $class;
}

sub port        { $_[0]{port} }
sub secret      { $_[0]{secret} }
sub secret_file { $_[0]{secret_file} }
sub url         { 'http://127.0.0.1:' . $_[0]{port} . ($_[1] // '/hooks') }

sub fault {
    my ($self, %o) = @_;
    my $r = $self->{http}->post_form($self->url('/_fault'), { count => 1, %o });
    die "webhook-server /_fault: $r->{status}\n" unless $r->{success};
}
sub reset { $_[0]{http}->post_form($_[0]->url('/_reset'), {}) }
sub requests {
    my $r = $_[0]{http}->get($_[0]->url('/_dump'));
    die "webhook-server /_dump: $r->{status}\n" unless $r->{success};
    return @{ decode_json($r->{content})->{requests} };
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    local ($?, $!);
    kill 'TERM', $self->{pid};
    waitpid $self->{pid}, 0;
    delete $self->{pid};
}
sub DESTROY { $_[0]->stop }

1;
