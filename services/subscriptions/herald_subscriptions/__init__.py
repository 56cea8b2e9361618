"""Herald subscriptions service."""
