"""Herald billing service."""
