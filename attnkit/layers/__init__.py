"""Keras layers built on ``attnkit.ops``."""
