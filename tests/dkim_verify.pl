#!/usr/bin/perl
# Verifies the first DKIM signature of the message on standard input with Perl's
# Mail::DKIM, a verifier written apart from dkimpy, which the signer uses. The public key
# comes from the command line instead of DNS:
#
#     perl tests/dkim_verify.pl NAME STRING... < message.eml
#
# NAME is the record's name (<selector>._domainkey.<domain>), each STRING one character-
# string of its TXT record. Prints Mail::DKIM's result ("pass", "fail (body has been
# altered)", ...) and exits 0 on "pass" only.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS;

my ( $record_name, @strings ) = @ARGV;
die "usage: dkim_verify.pl NAME STRING... < message\n" unless @strings;

{
    # Mail::DKIM looks every key up through this one function: answer for our record
    # only, so a signature naming another selector or domain finds no key.
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ( $name, $type ) = @_;
        return () unless lc($name) eq lc($record_name) && uc($type) eq 'TXT';
        return Net::DNS::RR->new( name => $name, type => 'TXT', txtdata => [@strings] );
    };
}

binmode STDIN;
my $verifier = Mail::DKIM::Verifier->new();
while ( my $line = <STDIN> ) {
    $verifier->PRINT($line);
}
$verifier->CLOSE();
print $verifier->result_detail(), "\n";
exit( $verifier->result() eq 'pass' ? 0 : 1 );
