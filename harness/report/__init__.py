"""Results a person can read: the compare table."""
