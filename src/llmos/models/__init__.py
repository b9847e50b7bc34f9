"""llmos.models."""
