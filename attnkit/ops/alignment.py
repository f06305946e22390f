"""Alignment recursions of the stateful seq2seq mechanisms, as pure functions.

Shape legend: B batch, Tv memory (key/value) length, F location filters.
Every function maps the previous alignment ``previous`` (B, Tv) and this
step's quantities to the next alignment (B, Tv). All of them compute in at
least float32 and never produce NaN from masking.

- Monotonic attention (Raffel et al. 2017, https://arxiv.org/abs/1704.00784):
  ``monotonic_recursive``, ``monotonic_parallel`` (the expected alignment used
  in training, two algorithms for the same quantity) and ``monotonic_hard``
  (the discrete alignment used at inference).
- Forward attention (Zhang, Ling, Dai 2018, https://arxiv.org/abs/1807.06736):
  ``forward_attention``.
- Location-sensitive attention (Chorowski et al. 2015,
  https://arxiv.org/abs/1506.07503): ``location_features``.
"""

from __future__ import annotations

from keras import ops

from attnkit.ops.softmax import masked_softmax, softmax_dtype

_CUMPROD_FLOOR = 1e-10


def _float(x):
    return ops.cast(x, softmax_dtype(x.dtype))


def shift_right(x):
    """``x`` moved one position along the last axis, a zero entering at 0."""
    return ops.pad(x, [(0, 0), (1, 0)])[:, :-1]  # (B, Tv)


def exclusive_cumprod(x):
    """``[1, x_0, x_0 x_1, ...]`` along the last axis, through log space.

    ``exp(cumsum(log(x)))`` with ``x`` clipped away from 0, so the gradient
    never divides by zero when a factor saturates (``1 - p`` with ``p = 1``).
    """
    x = ops.clip(x, _CUMPROD_FLOOR, 1.0)
    inclusive = ops.exp(ops.cumsum(ops.log(x), axis=-1))  # (B, Tv)
    return ops.pad(inclusive, [(0, 0), (1, 0)], constant_values=1.0)[:, :-1]


def monotonic_parallel(p_choose, previous):
    """Expected monotonic alignment, closed form (Raffel et al. 2017, eq. 12).

    ``α_i = p_i · cumprod_excl(1 − p_i) · cumsum(α_{i−1} / cumprod_excl(1 − p_i))``,
    the denominator clipped to ``[1e-10, 1]`` (the closed form is exact only
    while no ``1 − p`` underflows; ``monotonic_recursive`` has no such limit).
    """
    p_choose, previous = _float(p_choose), _float(previous)
    cumprod = exclusive_cumprod(1.0 - p_choose)  # (B, Tv)
    carried = ops.cumsum(previous / ops.clip(cumprod, _CUMPROD_FLOOR, 1.0), axis=-1)
    return p_choose * cumprod * carried


def monotonic_recursive(p_choose, previous):
    """Expected monotonic alignment by its recurrence over the memory axis.

    ``q_j = (1 − p_{j−1}) q_{j−1} + α_{i−1,j}`` with ``q_0 = α_{i−1,0}``;
    ``α_ij = p_j q_j``. Exact for any ``p``; ``Σ_j α_ij ≤ Σ_j α_{i−1,j}``.
    """
    p_choose, previous = _float(p_choose), _float(previous)
    # Stacked tensors, and outputs shaped like the carry: the TensorFlow scan
    # of Keras needs both.
    xs = ops.stack([ops.transpose(p_choose), ops.transpose(previous)], axis=-1)  # (Tv, B, 2)

    def step(carry, x):
        q_prev, p_prev = carry[:, 0], carry[:, 1]  # (B,), (B,)
        p_j, a_j = x[:, 0], x[:, 1]
        q_j = (1.0 - p_prev) * q_prev + a_j
        carry = ops.stack([q_j, p_j], axis=-1)  # (B, 2)
        return carry, carry

    _, qp = ops.scan(step, ops.zeros_like(xs[0]), xs)  # (Tv, B, 2)
    alpha = qp[..., 0] * qp[..., 1]  # α_j = q_j p_j, (Tv, B)
    return ops.transpose(alpha)  # (B, Tv)


def monotonic_hard(p_choose, previous):
    """Discrete monotonic alignment (inference): a one-hot row or zeros.

    ``p_choose`` is binary (``1[e > 0]``) and ``previous`` one-hot (or zero).
    Attends to the first ``j ≥ t_{i−1}`` with ``p_j = 1``; when there is none,
    the row is all zeros (the context is 0) and stays zero afterwards.
    """
    p_choose, previous = _float(p_choose), _float(previous)
    candidates = p_choose * ops.cumsum(previous, axis=-1)  # 1 at j ≥ t_{i−1} with p_j = 1
    before = ops.cumsum(candidates, axis=-1) - candidates  # candidates before j
    return candidates * ops.cast(before == 0, candidates.dtype)  # keep the first, exactly


def forward_attention(energies, previous, mask=None, move=None):
    """One step of forward attention (Zhang, Ling, Dai 2018, eqs. 9-10 and 16).

    ``α̂_t(n) ∝ ((1 − u) α̂_{t−1}(n) + u α̂_{t−1}(n − 1)) · y_t(n)`` with
    ``y_t = softmax(energies)``; ``move`` (B, 1) is u, the probability of
    moving forward, or None for the plain rule ``α̂_{t−1}(n) + α̂_{t−1}(n − 1)``.

    Computed as ``softmax(e + log prior)`` over the positions with a positive
    prior: the softmax normaliser of ``y_t`` cancels, and the exponentials
    never underflow to an all-zero row while prior mass remains. A row with no
    visible position keeping prior mass gets zeros, never NaN.
    """
    energies, previous = _float(energies), _float(previous)
    shifted = shift_right(previous)  # (B, Tv)
    if move is None:
        prior = previous + shifted
    else:
        move = ops.cast(move, previous.dtype)  # (B, 1)
        prior = (1.0 - move) * previous + move * shifted
    support = prior > 0
    if mask is not None:
        support = ops.logical_and(support, ops.cast(mask, "bool"))
    log_prior = ops.log(ops.where(support, prior, ops.ones_like(prior)))
    return masked_softmax(energies + log_prior, support, axis=-1)


def location_features(alignment, kernel):
    """1-D convolution of an alignment (B, Tv) with ``kernel`` (K, 1, F).

    "same" padding: feature ``j`` sees positions ``j − (K−1)//2 ..
    j + K//2``; returns (B, Tv, F).
    """
    x = ops.expand_dims(alignment, -1)  # (B, Tv, 1)
    return ops.conv(x, ops.cast(kernel, x.dtype), strides=1, padding="same")  # (B, Tv, F)
