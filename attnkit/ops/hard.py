"""Hard attention weights: one key (or k keys) per query.

Shape legend: B batch, Tq query length, Tv key/value length. Every function
takes scores ``(..., Tv)`` and a boolean mask broadcastable to them (True = may
attend) and returns weights in at least float32. A row with no visible key
gets all-zero weights, never NaN.

- ``argmax_weights``: one-hot of the best visible key (no gradient).
- ``gumbel_softmax_weights``: Jang et al. 2016's straight-through estimator:
  ``y = softmax((s + g) / τ)`` with ``g = -log(-log U)``; the forward value is
  ``one_hot(argmax y)`` exactly, the gradient is that of ``y``.
- ``topk_weights``: softmax over the k best visible scores, zero elsewhere.
"""

from __future__ import annotations

import keras
from keras import ops

from attnkit.ops.masks import large_negative
from attnkit.ops.softmax import masked_softmax, softmax_dtype

_TINY = 1e-20


def _visible_logits(scores, mask):
    dtype = softmax_dtype(scores.dtype)
    scores = ops.cast(scores, dtype)
    if mask is None:
        return scores, None
    mask = ops.cast(mask, "bool")
    return ops.where(mask, scores, large_negative(dtype)), mask


def _one_hot_of_best(logits, mask):
    best = ops.argmax(logits, axis=-1)  # (...,)
    positions = ops.arange(ops.shape(logits)[-1])
    hard = ops.cast(
        ops.equal(positions, ops.cast(best[..., None], positions.dtype)), logits.dtype
    )  # (..., Tv)
    if mask is not None:
        hard = hard * ops.cast(mask, logits.dtype)  # a row with no visible key: zeros
    return hard


def argmax_weights(scores, mask=None):
    """One-hot of the highest visible score per row ``(..., Tv)``."""
    logits, mask = _visible_logits(scores, mask)
    return _one_hot_of_best(logits, mask)


def gumbel_noise(shape, *, seed=None, dtype="float32"):
    """Standard Gumbel samples ``-log(-log U)``, U ~ U(0, 1), finite."""
    u = keras.random.uniform(shape, minval=_TINY, maxval=1.0, dtype=dtype, seed=seed)
    return -ops.log(ops.maximum(-ops.log(u), _TINY))


def gumbel_softmax_weights(scores, mask=None, *, temperature=1.0, seed=None, hard=True):
    """Gumbel-softmax weights; ``hard`` gives the straight-through one-hot.

    Args:
        scores: ``(..., Tv)``.
        mask: boolean, broadcastable to ``scores``, True = may attend.
        temperature: τ > 0 of the relaxed softmax.
        seed: int or ``keras.random.SeedGenerator`` for the noise.
        hard: forward one-hot (straight-through) or the soft ``y``.

    Returns:
        ``(..., Tv)``: with ``hard`` the forward value is exactly one-hot and
        the gradient is the gradient of ``y = softmax((s + g) / τ)``.
    """
    logits, mask = _visible_logits(scores, mask)
    noisy = logits + gumbel_noise(ops.shape(logits), seed=seed, dtype=logits.dtype)
    soft = masked_softmax(noisy / temperature, mask, axis=-1)
    if not hard:
        return soft
    one_hot = _one_hot_of_best(noisy, mask)
    # soft - stop_gradient(soft) is exactly 0 forward, so the forward value is
    # exactly one-hot (one_hot - sg(soft) + soft can round to 1 ± 1 ulp).
    return one_hot + (soft - ops.stop_gradient(soft))


def topk_weights(scores, k, mask=None, *, temperature=1.0):
    """Softmax over the ``k`` highest visible scores of each row; 0 elsewhere.

    Rows with fewer than ``k`` visible keys keep all of them. Exactly k
    indices are kept (``top_k`` breaks ties), so at most k weights are
    non-zero. With k = 1 the kept weight is the constant 1 and no gradient
    reaches the scores.
    """
    logits, mask = _visible_logits(scores, mask)
    tv = logits.shape[-1]
    k = k if tv is None else min(k, tv)
    _, indices = ops.top_k(logits, k)  # (..., k)
    positions = ops.arange(ops.shape(logits)[-1])
    chosen = ops.equal(ops.cast(indices[..., :, None], positions.dtype), positions)  # (..., k, Tv)
    keep = ops.any(chosen, axis=-2)  # (..., Tv)
    if mask is not None:
        keep = ops.logical_and(keep, mask)
    return masked_softmax(logits / temperature, keep, axis=-1)
