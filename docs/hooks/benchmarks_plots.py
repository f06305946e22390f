"""MkDocs hook: draws benchmarks.md's plots from benchmarks/results/*.json (placeholder)."""

from __future__ import annotations


def on_pre_build(config) -> None:
    return None
