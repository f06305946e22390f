"""Local attention (Luong, Pham, Manning 2015): a Gaussian window around p_t.

Shape legend: B batch, Tq query length, Tv key/value length, D feature size.
Positions are 0-based: key ``s`` sits at ``s = 0 .. Tv - 1``.

- local-m (monotonic): ``p_t = t`` when Tq == Tv; otherwise ``t`` is mapped
  linearly onto the key axis, ``p_t = t · (Tv - 1) / (Tq - 1)`` (first query
  on the first key, last on the last).
- local-p (predictive): ``p_t = Tv · sigmoid(v_pᵀ tanh(W_p h_t))``, in (0, Tv).
- ``a_t(s) = align(h_t, h̄_s) · exp(-(s - p_t)² / (2σ²))`` for
  ``|s - p_t| <= window`` and exactly 0 outside, σ = window / 2 by default.
  ``align`` is the softmax of the scores over the keys inside the window.

Like the paper, the weights are *not* renormalised after the Gaussian: a row
sums to at most 1. With a window covering every key and σ → ∞ the Gaussian is
1 and local attention is global attention.
"""

from __future__ import annotations

from keras import ops

from attnkit.ops.masks import combine_masks
from attnkit.ops.softmax import masked_softmax, softmax_dtype


def monotonic_positions(query_length, key_length, dtype="float32"):
    """local-m's ``p_t`` ``(Tq,)``: ``t`` scaled onto ``[0, Tv - 1]`` (``t`` when Tq == Tv)."""
    t = ops.cast(ops.arange(query_length), dtype)
    # (Tv - 1) / (Tq - 1) is exactly 1 when Tq == Tv.
    ratio = ops.cast(key_length - 1, dtype) / ops.cast(ops.maximum(query_length - 1, 1), dtype)
    return t * ratio


def predictive_positions(query, position_kernel, position_vector, key_length):
    """local-p's ``p_t = Tv · sigmoid(v_pᵀ tanh(W_p h_t))``, ``(B, Tq)``.

    Args:
        query: ``(B, Tq, Dq)``.
        position_kernel: ``W_p`` ``(Dq, P)``.
        position_vector: ``v_p`` ``(P,)``.
        key_length: Tv (static int or scalar tensor).
    """
    hidden = ops.tanh(ops.matmul(query, position_kernel))  # (B, Tq, P)
    logit = ops.einsum("bqp,p->bq", hidden, position_vector)  # (B, Tq)
    return ops.cast(key_length, logit.dtype) * ops.sigmoid(logit)


def local_weights(scores, positions, window, *, sigma=None, mask=None):
    """Luong's local weights from ``scores`` ``(B, Tq, Tv)`` and ``p_t``.

    Args:
        scores: ``(B, Tq, Tv)``.
        positions: ``p_t``, ``(Tq,)`` or ``(B, Tq)``.
        window: D, the half-width of the window.
        sigma: the Gaussian's standard deviation; None means ``window / 2``.
        mask: boolean, broadcastable to ``(B, Tq, Tv)``, True = may attend.

    Returns:
        ``(B, Tq, Tv)`` in at least float32: zero outside
        ``[p_t - D, p_t + D]`` and where masked, not renormalised after the
        Gaussian. A row with no visible key is all zeros.
    """
    dtype = softmax_dtype(scores.dtype)
    scores = ops.cast(scores, dtype)
    sigma = window / 2.0 if sigma is None else sigma
    positions = ops.cast(positions, dtype)
    if len(positions.shape) == 1:
        positions = positions[None, :]
    p = positions[:, :, None]  # (B|1, Tq, 1)
    s = ops.cast(ops.arange(ops.shape(scores)[-1]), dtype)[None, None, :]  # (1, 1, Tv)
    distance = s - p  # (B|1, Tq, Tv)
    inside = ops.abs(distance) <= window
    align = masked_softmax(scores, combine_masks(mask, inside), axis=-1)
    gaussian = ops.exp(-ops.square(distance) / (2.0 * sigma * sigma))
    return align * gaussian


def local_attention(
    scores, value, positions, window, *, sigma=None, mask=None, return_weights=False
):
    """``c_t = Σ_s a_t(s) h̄_s`` with ``a = local_weights(...)``; value ``(B, Tv, Dv)``.

    Returns ``(B, Tq, Dv)`` (in the value's dtype), and the weights when
    ``return_weights``.
    """
    weights = local_weights(scores, positions, window, sigma=sigma, mask=mask)
    weights = ops.cast(weights, value.dtype)
    out = ops.einsum("bqk,bkd->bqd", weights, value)  # (B, Tq, Dv)
    if return_weights:
        return out, weights
    return out
