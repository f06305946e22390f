"""attnkit.cli."""
