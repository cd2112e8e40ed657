"""The consumer group protocol (KIP-848): consumer groups, assignors, regular expressions."""
