"""Attention pooling: a sequence (B, T, D) to one vector per query (B, Q, D).

Shape legend: B batch, T time steps, D feature size, U attention width,
Q learned queries (context vectors).

Two score functions, both weight-free (the layer passes its weights in):

- HAN word attention (Yang et al. 2016): ``u_t = tanh(W h_t + b)``,
  ``e_t = u_tᵀ u_w``; unbounded scores.
- Feed-forward attention (Raffel & Ellis 2015): ``e_t = tanh(w h_t + b)``,
  a scalar in (-1, 1) per step.

``pooling_weights`` turns the scores into weights over T (masked steps get
exactly 0, a fully masked sequence all zeros) and ``attention_pool`` takes the
weighted sum.
"""

from __future__ import annotations

import keras
from keras import ops

from attnkit.ops.softmax import masked_softmax


def han_scores(inputs, kernel, context, bias=None):
    """Yang et al. 2016: ``e_qt = u_qᵀ tanh(W h_t + b)``.

    Args:
        inputs: ``(B, T, D)``.
        kernel: ``W``, ``(D, U)``.
        context: the context vectors ``u_w``, ``(U, Q)``.
        bias: ``b``, ``(U,)``, or None.

    Returns:
        Scores ``(B, Q, T)``.
    """
    hidden = ops.matmul(inputs, kernel)  # (B, T, U)
    if bias is not None:
        hidden = hidden + bias
    hidden = ops.tanh(hidden)
    return ops.einsum("btu,uq->bqt", hidden, context)  # (B, Q, T)


def feedforward_scores(inputs, kernel, bias=None):
    """Raffel & Ellis 2015: ``e_qt = tanh(w_qᵀ h_t + b_q)``.

    Args:
        inputs: ``(B, T, D)``.
        kernel: ``w``, one column per query, ``(D, Q)``.
        bias: ``b``, ``(Q,)``, or None.

    Returns:
        Scores ``(B, Q, T)``, each in (-1, 1).
    """
    scores = ops.matmul(inputs, kernel)  # (B, T, Q)
    if bias is not None:
        scores = scores + bias
    return ops.transpose(ops.tanh(scores), (0, 2, 1))  # (B, Q, T)


def pooling_weights(scores, mask=None):
    """Softmax over time of ``scores`` ``(B, Q, T)``; ``mask`` ``(B, T)``, True = keep.

    Computed in at least float32 and cast back to the scores' dtype. Masked
    steps get exactly 0; a sequence with every step masked gets all zeros.
    """
    if mask is not None:
        mask = ops.cast(mask, "bool")[:, None, :]  # (B, 1, T)
    return ops.cast(masked_softmax(scores, mask, axis=-1), scores.dtype)


def attention_pool(inputs, scores, mask=None, *, dropout=0.0, seed=None, return_weights=False):
    """``out_q = Σ_t α_qt h_t`` with ``α = pooling_weights(scores, mask)``.

    Args:
        inputs: ``(B, T, D)``.
        scores: ``(B, Q, T)``.
        mask: ``(B, T)`` boolean, True = keep, or None.
        dropout: rate applied to the weights before the sum (pass 0 outside
            training). The returned weights are taken before dropout.
        seed: int or ``keras.random.SeedGenerator`` for the dropout.
        return_weights: also return the weights ``(B, Q, T)``.

    Returns:
        ``(B, Q, D)``, and the weights when ``return_weights``. A fully masked
        sequence pools to a zero vector.
    """
    weights = pooling_weights(scores, mask)
    used = weights
    if dropout > 0:
        used = keras.random.dropout(weights, dropout, seed=seed)
    out = ops.einsum("bqt,btd->bqd", used, ops.cast(inputs, weights.dtype))  # (B, Q, D)
    if return_weights:
        return out, weights
    return out
