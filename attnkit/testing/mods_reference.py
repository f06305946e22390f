"""Float64 NumPy references of the mods of ``attnkit.ops.mods``, from the equations.

Independent of ``attnkit.ops``: plain NumPy, positions built explicitly.
Every reference works on absolute positions: query ``i`` of ``Tq`` sits at
key position ``i + Tv - Tq`` (bottom-right, the core's default), key ``j`` at
``j``. Masks are boolean, True = may attend, shape ``(B|1, Tq, Tv)``; biases
are ``(H, Tq, Tv)``.

- ALiBi (Press et al. 2021): ``reference_alibi_slopes``, ``reference_alibi_bias``
- T5 (Raffel et al. 2020): ``reference_t5_bucket``, ``reference_t5_bias``
- ``reference_soft_cap``
- masks: causal, sliding window, dilated window, window with sinks, document,
  prefix-LM
- ``reference_modded_attention``: attention with a float64 logit transform and
  mask, with the gradients of q, k, v and of an additive bias (from which a
  learned table's gradient follows by summing over its entries)
"""

from __future__ import annotations

import math

import numpy as np

from attnkit.testing.reference import reference_masked_softmax


def _positions(tq, tv):
    """(Tq, 1) query and (1, Tv) key positions, bottom-right aligned."""
    return np.arange(tq)[:, None] + (tv - tq), np.arange(tv)[None, :]


# Score mods -----------------------------------------------------------------------


def reference_alibi_slopes(num_heads):
    """``m_h = 2^(-8h/H)`` for H a power of two; otherwise those of the lower
    power of two P, then ``2^(-8h/(2P))`` for odd h (Press et al.'s code)."""
    p = 1
    while 2 * p <= num_heads:
        p *= 2
    slopes = [2.0 ** (-8.0 * h / p) for h in range(1, p + 1)]
    slopes += [2.0 ** (-4.0 * h / p) for h in range(1, 2 * p, 2)][: num_heads - p]
    return np.array(slopes, dtype=np.float64)


def reference_alibi_bias(num_heads, tq, tv):
    """(H, Tq, Tv): ``-m_h |i - j|``."""
    i, j = _positions(tq, tv)
    return -reference_alibi_slopes(num_heads)[:, None, None] * np.abs(i - j)[None]


def reference_t5_bucket(relative_position, num_buckets=32, max_distance=128, bidirectional=True):
    """T5's bucket of ``j - i`` in float64 arithmetic (Raffel et al. 2020):
    ``n`` buckets per side (half when bidirectional, the upper half for
    ``j > i``), exact below ``n/2``, logarithmic up to ``max_distance``."""
    rel = np.asarray(relative_position, dtype=np.int64)
    n = num_buckets // 2 if bidirectional else num_buckets
    if bidirectional:
        offset, distance = np.where(rel > 0, n, 0), np.abs(rel)
    else:
        offset, distance = 0, np.maximum(-rel, 0)
    exact = n // 2
    with np.errstate(divide="ignore"):
        log_part = np.log(np.maximum(distance, 1) / exact) / math.log(max_distance / exact)
    large = np.minimum(exact + np.floor(log_part * (n - exact)).astype(np.int64), n - 1)
    return offset + np.where(distance < exact, distance, large)


def reference_t5_bias(table, tq, tv, num_buckets=32, max_distance=128, bidirectional=True):
    """(H, Tq, Tv): ``table[bucket(j - i), h]``."""
    i, j = _positions(tq, tv)
    bucket = reference_t5_bucket(j - i, num_buckets, max_distance, bidirectional)
    return np.moveaxis(np.asarray(table, dtype=np.float64)[bucket], -1, 0)


def reference_soft_cap(score, cap):
    """``c · tanh(s / c)``."""
    return cap * np.tanh(np.asarray(score, dtype=np.float64) / cap)


# Masks ----------------------------------------------------------------------------


def reference_causal_mask(tq, tv):
    i, j = _positions(tq, tv)
    return (j <= i)[None]


def reference_sliding_window(tq, tv, window):
    i, j = _positions(tq, tv)
    return (np.abs(i - j) < window)[None]


def reference_dilated_sliding_window(tq, tv, window, dilation):
    """Visible when ``|i - j| = k · dilation`` for some ``k < window``."""
    i, j = _positions(tq, tv)
    visible = np.zeros((tq, tv), dtype=bool)
    for k in range(window):
        visible |= np.abs(i - j) == k * dilation
    return visible[None]


def reference_sliding_window_with_sinks(tq, tv, window, num_sinks):
    i, j = _positions(tq, tv)
    return ((np.abs(i - j) < window) | (j < num_sinks))[None]


def reference_document_mask(segment_ids, query_segment_ids=None):
    """(B, Tq, Tv): same segment; queries read ``segment_ids`` at their key
    position unless ``query_segment_ids`` (B, Tq) is given."""
    kv = np.asarray(segment_ids)
    if query_segment_ids is None:
        q = kv
    else:
        q = np.asarray(query_segment_ids)
    mask = np.zeros((kv.shape[0], q.shape[1], kv.shape[1]), dtype=bool)
    for b in range(kv.shape[0]):
        for i in range(q.shape[1]):
            for j in range(kv.shape[1]):
                mask[b, i, j] = q[b, i] == kv[b, j]
    return mask


def reference_prefix_lm(prefix_lengths, batch, tq, tv):
    """(B, Tq, Tv): ``j < prefix[b]`` or ``j <= i``."""
    lengths = np.broadcast_to(np.asarray(prefix_lengths), (batch,))
    i, j = _positions(tq, tv)
    return (j[None] < lengths[:, None, None]) | (j <= i)[None]


# Attention with mods ---------------------------------------------------------------


def reference_modded_attention(
    query, key, value, *, bias=None, cap=None, mask=None, cotangent=None
):
    """Attention with an additive bias, a soft cap and a mask, in float64.

    ``s = q k^T / sqrt(D)``, ``z = s + bias``, ``l = cap · tanh(z / cap)`` (``l = z``
    without a cap), weights ``softmax(l)`` under ``mask``. ``query`` (B, Tq, H, D),
    ``key``/``value`` (B, Tv, Hkv, D), ``bias`` and ``mask`` broadcastable to
    (B, H, Tq, Tv). Returns ``(out (B, Tq, H, Dv), weights (B, H, Tq, Tv))``; with
    ``cotangent`` (B, Tq, H, Dv) also the gradients of ``sum(out * cotangent)``:
    ``(dq, dk, dv, dbias)``, ``dbias`` (B, H, Tq, Tv) (a bias table's gradient
    is its sum over the entries that read each table entry, see
    ``reference_t5_table_gradient``). ``dl = P ⊙ (dP - rowsum(dP ⊙ P))``,
    ``dz = dl · (1 - tanh²(z / cap))``, ``dq = dz K / sqrt(D)``, ``dk = dzᵀ Q / sqrt(D)``.
    """
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (query, key, value))
    b, tq, h, d = q.shape
    tv, hkv = k.shape[1], k.shape[2]
    group = h // hkv
    kh = np.repeat(k, group, axis=2)  # (B, Tv, H, D)
    vh = np.repeat(v, group, axis=2)
    z = np.einsum("bqhd,bkhd->bhqk", q, kh) / np.sqrt(d)  # (B, H, Tq, Tv)
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    logits = z if cap is None else reference_soft_cap(z, cap)
    full = np.ones(z.shape, dtype=bool) if mask is None else np.broadcast_to(mask, z.shape)
    w = reference_masked_softmax(logits, full)
    out = np.einsum("bhqk,bkhd->bqhd", w, vh)
    if cotangent is None:
        return out, w
    g = np.asarray(cotangent, dtype=np.float64)
    dp = np.einsum("bqhd,bkhd->bhqk", g, vh)
    dl = w * (dp - np.sum(dp * w, axis=-1, keepdims=True))
    dz = dl if cap is None else dl * (1.0 - np.tanh(z / cap) ** 2)
    dq = np.einsum("bhqk,bkhd->bqhd", dz, kh) / np.sqrt(d)
    dkh = np.einsum("bhqk,bqhd->bkhd", dz, q) / np.sqrt(d)
    dvh = np.einsum("bhqk,bqhd->bkhd", w, g)
    dk = dkh.reshape(b, tv, hkv, group, d).sum(3)
    dv = dvh.reshape(b, tv, hkv, group, -1).sum(3)
    return out, w, (dq, dk, dv, dz)


def reference_t5_table_gradient(dbias, num_buckets=32, max_distance=128, bidirectional=True):
    """(num_buckets, H): the gradient of T5's table from that of its bias
    ``dbias`` (B, H, Tq, Tv): entry (n, h) sums ``dbias[:, h, i, j]`` over the
    pairs in bucket n."""
    dbias = np.asarray(dbias, dtype=np.float64)
    _, h, tq, tv = dbias.shape
    i, j = _positions(tq, tv)
    bucket = np.broadcast_to(
        reference_t5_bucket(j - i, num_buckets, max_distance, bidirectional), (tq, tv)
    )
    grad = np.zeros((num_buckets, h))
    for n in range(num_buckets):
        grad[n] = dbias[..., bucket == n].sum(axis=(0, -1))
    return grad
