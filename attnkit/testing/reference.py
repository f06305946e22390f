"""Float64 NumPy reference of the attention core, written from the equations.

Deliberately independent of ``attnkit.ops``: loops over heads, plain
``softmax(q kᵀ · scale + bias)`` on explicitly built boolean masks.
"""

from __future__ import annotations

import numpy as np


def reference_mask(tq, tv, *, causal=False, window=None):
    """(Tq, Tv) boolean mask from causal alignment and window, True = attend."""
    if causal is True:
        causal = "bottom_right"
    offset = 0 if causal == "top_left" else tv - tq
    i = np.arange(tq)[:, None] + offset
    j = np.arange(tv)[None, :]
    mask = np.ones((tq, tv), dtype=bool)
    if causal:
        mask &= j <= i
    if window is not None:
        mask &= np.abs(i - j) < window
    return mask


def _to_bhqk(x, rank, heads):
    """Caller-layout mask/bias -> (B|1, H, Tq, Tv)."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[:, None]
    return np.broadcast_to(x, (x.shape[0], heads) + x.shape[2:]) if x.shape[1] == 1 else x


def reference_attention(
    query,
    key,
    value,
    *,
    score="scaled_dot",
    mask=None,
    causal=False,
    window=None,
    bias=None,
    scale=None,
):
    """Returns (output, weights) in float64, layouts as ``attnkit.ops.attention``."""
    q = np.asarray(query, dtype=np.float64)
    k = np.asarray(key, dtype=np.float64)
    v = np.asarray(value, dtype=np.float64)
    rank = q.ndim
    if rank == 3:
        q, k, v = q[:, :, None], k[:, :, None], v[:, :, None]
    b, tq, h, d = q.shape
    tv, hkv = k.shape[1], k.shape[2]
    group = h // hkv
    if scale is None:
        scale = 1.0 / np.sqrt(d) if score == "scaled_dot" else 1.0
    full = reference_mask(tq, tv, causal=causal, window=window)[None, None]
    if mask is not None:
        full = full & _to_bhqk(mask, rank, h)
    full = np.broadcast_to(full, (b, h, tq, tv))
    add = np.zeros((1, h, 1, 1))
    if bias is not None:
        add = add + _to_bhqk(np.asarray(bias, dtype=np.float64), rank, h)
    out = np.zeros((b, tq, h, v.shape[-1]))
    weights = np.zeros((b, h, tq, tv))
    for head in range(h):
        qh = q[:, :, head]  # (B, Tq, D)
        kh = k[:, :, head // group]
        vh = v[:, :, head // group]
        if score == "cosine":
            qh = qh / np.maximum(np.linalg.norm(qh, axis=-1, keepdims=True), 1e-6)
            kh = kh / np.maximum(np.linalg.norm(kh, axis=-1, keepdims=True), 1e-6)
        s = (qh @ kh.swapaxes(1, 2)) * scale + add[:, head]  # (B, Tq, Tv)
        m = full[:, head]
        s = np.where(m, s, -np.inf)
        row_max = np.max(s, axis=-1, keepdims=True)
        row_max = np.where(np.isfinite(row_max), row_max, 0.0)
        e = np.where(m, np.exp(s - row_max), 0.0)
        total = e.sum(-1, keepdims=True)
        w = np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)
        weights[:, head] = w
        out[:, :, head] = w @ vh
    if rank == 3:
        return out[:, :, 0], weights[:, 0]
    return out, weights


def reference_softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
