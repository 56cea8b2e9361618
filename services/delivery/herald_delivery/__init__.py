"""Herald delivery service."""
