"""llmos.inference."""
