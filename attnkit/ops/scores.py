"""Score functions: how much a query matches each key.

Every score works in attnkit's internal grouped layout, so grouped-query
attention never materialises repeated keys:

    query (B, Tq, Hkv, G, D), key (B, Tv, Hkv, D)  ->  logits (B, Hkv, G, Tq, Tv)

where G = H // Hkv query heads share each key/value head. A custom score is any
callable with that signature; it must treat (query, key) pairs independently so
that it can be evaluated block by block by the memory-efficient path.
"""

from __future__ import annotations

import math

from keras import ops

from attnkit.ops.softmax import softmax_dtype


def dot_score(query, key):
    """Luong 2015 "dot": ``qᵀk``."""
    return ops.einsum("bqhgd,bkhd->bhgqk", query, key)  # (B, Hkv, G, Tq, Tv)


def scaled_dot_score(query, key):
    """Vaswani 2017: ``qᵀk / sqrt(D)``."""
    scale = 1.0 / math.sqrt(query.shape[-1])
    return dot_score(ops.multiply(query, ops.cast(scale, query.dtype)), key)


def _l2_normalize(x, eps=1e-12):
    # In at least float32: in float16 the squares of small entries underflow
    # and eps itself rounds to 0, which turned a small vector into inf/NaN.
    # sqrt(sum x²) is clipped away from 0 so a zero vector scores 0, not NaN.
    x = ops.cast(x, softmax_dtype(x.dtype))
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), eps))
    return x / norm


def cosine_score(query, key):
    """Cosine similarity ``(q/|q|)ᵀ(k/|k|)``; the temperature is ``scale``.

    Computed in at least float32 (the logits are float32 anyway), so half
    inputs neither underflow nor lose the similarity's digits.
    """
    return dot_score(_l2_normalize(query), _l2_normalize(key))


def additive_score(query, key, v, scale=None):
    """Bahdanau 2014 / Luong "concat" over projected inputs: ``vᵀ tanh(q + k)``.

    ``query`` and ``key`` must already be projected to the same width U
    (``W_q q`` and ``W_k k``). Cost and memory are O(Tq·Tv·U) per call, which is
    why the chunked path evaluates it block by block.
    """
    q = ops.transpose(query, (0, 2, 3, 1, 4))[:, :, :, :, None, :]  # (B, Hkv, G, Tq, 1, U)
    k = ops.transpose(key, (0, 2, 1, 3))[:, :, None, None, :, :]  # (B, Hkv, 1, 1, Tv, U)
    hidden = ops.tanh(q + k)  # (B, Hkv, G, Tq, Tv, U)
    if scale is not None:
        v = v * scale
    return ops.einsum("bhgqku,u->bhgqk", hidden, v)  # (B, Hkv, G, Tq, Tv)


SCORES = {
    "dot": dot_score,
    "scaled_dot": scaled_dot_score,
    "cosine": cosine_score,
}


def get_score(score):
    """Resolves a score name or callable."""
    if callable(score):
        return score
    if isinstance(score, str) and score in SCORES:
        return SCORES[score]
    raise ValueError(
        f"`score` must be one of {sorted(SCORES)} or a callable "
        f"score(query, key) -> logits. Received: score={score!r}"
    )
