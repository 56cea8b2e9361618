"""Herald campaigns service."""
