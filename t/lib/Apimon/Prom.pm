package Apimon::Prom;
# A strict parser of the Prometheus text exposition format (0.0.4), for the
# tests of apimon_metrics (t/80) and the agent's --metrics-file (t/82).
use strict;
use warnings;

my $NAME = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
my $LABEL = qr/[a-zA-Z_][a-zA-Z0-9_]*/;
my $VALUE = qr/(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN)/;

# the exposition text: { family => { type, help, samples => { series => value } } }
# dies with the line at fault on anything the format does not allow
sub parse_exposition {
    my ($text) = @_;
    die "empty\n" if $text eq '';
    die "the last line has no newline\n" unless $text =~ /\n\z/;
    my (%fam, %seen_series, $current, %closed);
    my $n = 0;
    for my $line (split /\n/, $text, -1) {
        $n++;
        last if $n > 1 && $line eq '' && $n == scalar(() = $text =~ /\n/g) + 1;
        die "line $n: empty line\n" if $line eq '';
        if ($line =~ /^#/) {
            if ($line =~ /^# (HELP|TYPE) ($NAME) (.*)$/) {
                my ($kw, $name, $rest) = ($1, $2, $3);
                die "line $n: $name after its samples\n" if $closed{$name} || ($fam{$name} && $fam{$name}{n});
                if ($kw eq 'TYPE') {
                    die "line $n: bad type $rest\n" unless $rest =~ /^(counter|gauge|histogram|summary|untyped)$/;
                    die "line $n: second TYPE for $name\n" if $fam{$name}{type};
                    $fam{$name}{type} = $rest;
                } else {
                    die "line $n: second HELP for $name\n" if defined $fam{$name}{help};
                    die "line $n: bad escape in HELP\n" unless $rest =~ /^(?:[^\\]|\\[\\n])*$/;
                    $fam{$name}{help} = $rest;
                }
                $closed{$current} = 1 if defined $current && $current ne $name;
                $current = $name;
            } elsif ($line =~ /^# (HELP|TYPE)/) {
                die "line $n: malformed $1 line\n";
            }
            next;
        }
        die "line $n: malformed sample: $line\n"
            unless $line =~ /^($NAME)(?:\{(.*)\})? ($VALUE)(?: (-?\d+))?$/;
        my ($sname, $labels, $value) = ($1, $2 // '', $3);
        my %l;
        my $rest = $labels;
        while ($rest ne '') {
            $rest =~ s/^($LABEL)="((?:[^"\\\n]|\\[\\"n])*)"// or die "line $n: bad labels: {$labels}\n";
            die "line $n: label $1 twice\n" if exists $l{$1};
            $l{$1} = $2;
            last if $rest eq '';
            $rest =~ s/^,// or die "line $n: bad labels: {$labels}\n";
        }
        # the family: the name, or a histogram's name_bucket/_sum/_count
        my $family = $sname;
        if (!($fam{$sname} && $fam{$sname}{type}) && $sname =~ /^(.*)_(?:bucket|sum|count)$/) {
            my $base = $1;
            $family = $base if $fam{$base} && ($fam{$base}{type} // '') =~ /^(?:histogram|summary)$/;
        }
        die "line $n: $sname has no TYPE before it\n" unless $fam{$family}{type};
        die "line $n: ${family}'s samples are not together\n" if $closed{$family};
        $closed{$current} = 1 if defined $current && $current ne $family;
        $current = $family;
        my $type = $fam{$family}{type};
        die "line $n: counter $family does not end in _total\n"
            if $type eq 'counter' && $family !~ /_total$/;
        die "line $n: a counter below zero\n" if $type eq 'counter' && $value =~ /^-/;
        if ($type eq 'histogram') {
            die "line $n: $sname in histogram $family\n" unless $sname =~ /_(bucket|sum|count)$/;
            die "line $n: a bucket without le\n" if $sname =~ /_bucket$/ && !exists $l{le};
            die "line $n: le outside a bucket\n" if $sname !~ /_bucket$/ && exists $l{le};
        }
        my $series = $sname . '{' . join(',', map { "$_=$l{$_}" } sort keys %l) . '}';
        die "line $n: series $series twice\n" if $seen_series{$series}++;
        $fam{$family}{n}++;
        $fam{$family}{samples}{$series} = $value;
        push @{ $fam{$family}{list} }, [$sname, \%l, $value];
    }
    # histograms: cumulative buckets, +Inf equal to _count
    for my $f (grep { $fam{$_}{type} && $fam{$_}{type} eq 'histogram' } keys %fam) {
        my @b = grep { $_->[0] eq "${f}_bucket" } @{ $fam{$f}{list} };
        die "$f: no +Inf bucket\n" unless @b && $b[-1][1]{le} eq '+Inf';
        my $prev = -1;
        my $prev_le = -1;
        for (@b) {
            my $le = $_->[1]{le} eq '+Inf' ? 9**9**9 : $_->[1]{le};
            die "$f: le not increasing\n" unless $le > $prev_le;
            die "$f: buckets not cumulative\n" if $_->[2] < $prev;
            ($prev, $prev_le) = ($_->[2], $le);
        }
        die "$f: +Inf bucket is not _count\n" unless $prev == $fam{$f}{samples}{"${f}_count{}"};
    }
    return \%fam;
}

1;
