"""llmos.recipes."""
