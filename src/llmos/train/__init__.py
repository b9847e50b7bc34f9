"""llmos.train."""
