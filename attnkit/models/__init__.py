"""attnkit.models: ready-made models for the demos."""
