"""Masked softmax that never produces NaN."""

from __future__ import annotations

import keras
from keras import ops

from attnkit.ops.masks import large_negative


def softmax_dtype(dtype) -> str:
    """Softmax runs in at least float32 (float64 stays float64)."""
    dtype = keras.backend.standardize_dtype(dtype)
    return "float64" if dtype == "float64" else "float32"


def masked_softmax(logits, mask=None, axis=-1):
    """Softmax over ``axis`` where ``mask`` (True = keep) is False gets weight 0.

    Computed in at least float32. A row whose entries are all masked gets all-zero
    weights (not the uniform distribution, not NaN). Returns the float32/float64
    weights; callers cast to their compute dtype.
    """
    dtype = softmax_dtype(logits.dtype)
    logits = ops.cast(logits, dtype)
    if mask is not None:
        mask = ops.cast(mask, "bool")
        logits = ops.where(mask, logits, large_negative(dtype))
    row_max = ops.max(logits, axis=axis, keepdims=True)
    # A row of -inf (e.g. from a user bias) must not turn into NaN.
    row_max = ops.where(ops.isfinite(row_max), row_max, ops.zeros_like(row_max))
    unnormalized = ops.exp(logits - ops.stop_gradient(row_max))
    if mask is not None:
        unnormalized = unnormalized * ops.cast(mask, dtype)
    total = ops.sum(unnormalized, axis=axis, keepdims=True)
    safe_total = ops.where(total > 0, total, ops.ones_like(total))
    return unnormalized / safe_total
