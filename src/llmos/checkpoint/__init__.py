"""llmos.checkpoint."""
