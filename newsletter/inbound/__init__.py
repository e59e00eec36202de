"""What comes back: bounces, complaints and mailto unsubscribes (docs/bounces.md)."""
