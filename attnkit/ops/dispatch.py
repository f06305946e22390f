"""Chooses an implementation for ``implementation="auto"`` and checks explicit ones.

The thresholds come from measurements on a 2-core CPU (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import keras

# Below this many (query, key) pairs per head the naive path is as fast as any
# other and the scores fit in cache; above it chunked wins on memory and, on
# JAX and TensorFlow, on time (page faults of large fresh buffers dominate).
NAIVE_MAX_PAIRS = 512 * 512


def fused_supports(problem, return_weights, dropout_active):
    """Why the fused kernel cannot serve this request, or None if it can."""
    if return_weights:
        return "it does not return the attention weights"
    if dropout_active:
        return "it does not apply dropout"
    if problem.score_name != "dot":
        return f"it only computes dot-product scores (score={problem.score_name or 'callable'})"
    return None


def chunked_supports(problem, return_weights, dropout_active):
    if return_weights:
        return "it never materialises the weights; use attention_weights() or implementation='naive'"
    if dropout_active:
        return "it does not apply dropout; use implementation='naive'"
    if problem.query_length is None or problem.key_length is None:
        return "it needs static sequence lengths"
    return None


def choose(problem, implementation, return_weights, dropout_active):
    if implementation == "naive":
        return "naive"
    if implementation in ("chunked", "fused"):
        check = chunked_supports if implementation == "chunked" else fused_supports
        reason = check(problem, return_weights, dropout_active)
        if reason is not None:
            raise ValueError(
                f"implementation={implementation!r} cannot serve this call: {reason}. "
                f"Received: implementation={implementation!r}"
            )
        return implementation
    # "auto"
    backend = keras.backend.backend()
    if backend == "torch" and fused_supports(problem, return_weights, dropout_active) is None:
        return "fused"
    if chunked_supports(problem, return_weights, dropout_active) is None:
        if problem.query_length * problem.key_length > NAIVE_MAX_PAIRS:
            return "chunked"
    return "naive"
