"""Score functions: how much a query matches each key.

Every score takes queries ``(..., Tq, D)`` and keys ``(..., Tv, D)`` and returns
logits ``(..., Tq, Tv)``, broadcasting over the leading (batch, head) axes. A
custom score given to ``attnkit.ops.attention`` is any callable with that
signature that treats (query, key) pairs independently, so that the
memory-efficient path can evaluate it block by block. The core calls it with
its own grouped layout, ``(B, Hkv, G, Tq, D)`` against ``(B, Hkv, 1, Tv, D)``
(G query heads share each key/value head), so grouped-query attention never
materialises repeated keys.

Until attnkit 0.1 score callables took the core's internal layout, query
``(B, Tq, Hkv, G, D)`` and key ``(B, Tv, Hkv, D)``; that layout is gone
(CHANGELOG.md).
"""

from __future__ import annotations

import math

from keras import ops

from attnkit.ops.softmax import softmax_dtype


def dot_score(query, key):
    """Luong 2015 "dot": ``qᵀk``."""
    return ops.matmul(query, ops.swapaxes(key, -1, -2))  # (..., Tq, Tv)


def scaled_dot_score(query, key):
    """Vaswani 2017: ``qᵀk / sqrt(D)``."""
    scale = 1.0 / math.sqrt(query.shape[-1])
    return dot_score(ops.multiply(query, ops.cast(scale, query.dtype)), key)


def general_score(query, key, kernel):
    """Luong 2015 "general": ``qᵀ W k`` with ``kernel`` W of shape (Dq, Dk)."""
    return dot_score(ops.matmul(query, ops.cast(kernel, query.dtype)), key)


def at_least_float32(*tensors):
    """``tensors`` cast to at least float32 (float16/bfloat16 -> float32).

    The operands of an explicit (Tq, Tv) score in a half-precision layer: a dot
    product of entries representable in float16 (|x| <= 300, D = 8) already
    exceeds float16's 65504, while the softmax that follows is exact in
    float32. The layers that materialise their scores anyway (local, hard,
    the RNN mechanisms' Luong energies) score in float32; the cast costs
    O((Tq + Tv) D), the scores are float32 by then in any case.
    """
    cast = tuple(ops.cast(t, softmax_dtype(t.dtype)) for t in tensors)
    return cast[0] if len(cast) == 1 else cast


def l2_normalize(x, eps=1e-12):
    """``x / |x|`` over the last axis, in at least float32.

    In float16 the squares of small entries underflow and eps itself rounds to
    0, which turned a small vector into inf/NaN; sqrt(sum x²) is clipped away
    from 0 so a zero vector stays 0, not NaN. The only L2 normalisation of
    attnkit: every layer's cosine score goes through it.
    """
    x = ops.cast(x, softmax_dtype(x.dtype))
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), eps))
    return x / norm


def cosine_score(query, key):
    """Cosine similarity ``(q/|q|)ᵀ(k/|k|)``; the temperature is ``scale``.

    Computed in at least float32 (the logits are float32 anyway), so half
    inputs neither underflow nor lose the similarity's digits.
    """
    return dot_score(l2_normalize(query), l2_normalize(key))


def additive_score(query, key, v, scale=None):
    """Bahdanau 2014 / Luong "concat" energy over projected inputs: ``vᵀ tanh(q + k)``.

    ``query`` (..., Tq, U) and ``key`` (..., Tv, U) must already be projected to
    the same width U (``W_q q`` and ``W_k k``); ``v`` has shape (U,). ``scale``
    multiplies ``v``. Cost and memory are O(Tq·Tv·U) per call, which is why the
    chunked path evaluates it block by block.
    """
    hidden = ops.tanh(ops.expand_dims(query, -2) + ops.expand_dims(key, -3))  # (..., Tq, Tv, U)
    if scale is not None:
        v = v * scale
    return ops.matmul(hidden, ops.cast(v, hidden.dtype)[:, None])[..., 0]  # (..., Tq, Tv)


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
