"""Exact attention in O(N) memory: online softmax over query and key blocks.

Milakov & Gimelshein 2018 (online softmax), Rabe & Staats 2021
(arXiv:2112.05682), Dao et al. 2022 (FlashAttention). For each query block the
keys are visited block by block, keeping a running max ``m``, denominator ``l``
and unnormalised output ``acc``:

    m' = max(m, rowmax(s));  p = exp(s - m') · mask
    l' = l · exp(m - m') + rowsum(p);  acc' = acc · exp(m - m') + p v

Blocks that a causal or window mask hides entirely are skipped, not computed and
discarded. Written once with ``keras.ops`` (``map``, ``fori_loop``, ``cond``), so
it runs on every backend.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from attnkit.ops import naive
from attnkit.ops.masks import combine_masks, large_negative
from attnkit.ops.softmax import softmax_dtype

DEFAULT_BLOCK = (512, 1024)


def _validate_block_size(block_size):
    if block_size is None:
        return DEFAULT_BLOCK
    ok = (
        isinstance(block_size, (tuple, list))
        and len(block_size) == 2
        and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block_size)
    )
    if not ok:
        raise ValueError(
            "`block_size` must be a pair of positive integers (query_block, "
            f"key_block) or None. Received: block_size={block_size!r}"
        )
    return tuple(block_size)


def _pad_axis(x, axis, target):
    size = x.shape[axis]
    if size == target:
        return x
    widths = [(0, 0)] * len(x.shape)
    widths[axis] = (0, target - size)
    return ops.pad(x, widths)


def _pad_grouped(x, tq_pad, tv_pad):
    """Pads a (B, Hkv, G, Tq|1, Tv|1) mask or bias along its full-size axes."""
    if x is None:
        return None
    if x.shape[3] != 1:
        x = _pad_axis(x, 3, tq_pad)
    if x.shape[4] != 1:
        x = _pad_axis(x, 4, tv_pad)
    return x


def _block_of(x, q_start, bq, k_start, bk):
    """The (.., bq|1, bk|1) block of a padded grouped mask or bias."""
    if x is None:
        return None
    shape = ops.shape(x)
    full_q, full_k = x.shape[3] != 1, x.shape[4] != 1
    starts = [0, 0, 0, q_start if full_q else 0, k_start if full_k else 0]
    sizes = [shape[0], shape[1], shape[2], bq if full_q else 1, bk if full_k else 1]
    return ops.slice(x, starts, sizes)


def attend(problem, block_size=None):
    """Returns the output (B, Tq, Hkv, G, Dv), computed block by block."""
    bq, bk = _validate_block_size(block_size)
    tq, tv = problem.query_length, problem.key_length
    bq, bk = min(bq, tq), min(bk, tv)
    nq, nk = math.ceil(tq / bq), math.ceil(tv / bk)
    tq_pad, tv_pad = nq * bq, nk * bk

    query = naive.prescaled_query(problem)
    dtype = softmax_dtype(query.dtype)
    out_dtype = keras.backend.result_type(query.dtype, problem.value.dtype)
    value = ops.cast(problem.value, dtype)
    batch, _, kv_heads, groups, _ = ops.shape(query)
    dv = value.shape[-1]

    q_blocks = ops.reshape(_pad_axis(query, 1, tq_pad), (batch, nq, bq, kv_heads, groups, query.shape[-1]))
    k_blocks = ops.reshape(_pad_axis(problem.key, 1, tv_pad), (batch, nk, bk, kv_heads, problem.key.shape[-1]))
    v_blocks = ops.reshape(_pad_axis(value, 1, tv_pad), (batch, nk, bk, kv_heads, dv))
    mask = _pad_grouped(problem.mask, tq_pad, tv_pad)
    bias = _pad_grouped(problem.bias, tq_pad, tv_pad)
    neg = large_negative(dtype)
    causal, window, offset = problem.causal, problem.window, problem.offset

    def needed(q_start, k_start):
        """False when the position mask hides the whole (q, k) block."""
        q_first = q_start + offset
        q_last = q_first + bq - 1
        keep = None
        if causal is not None:
            keep = k_start <= q_last
        if window is not None:
            near = ops.logical_and(k_start + bk - 1 > q_first - window, k_start < q_last + window)
            keep = near if keep is None else ops.logical_and(keep, near)
        return keep

    def query_block(i):
        q_start = i * bq
        qb = ops.take(q_blocks, i, axis=1)  # (B, bq, Hkv, G, D)
        m0 = ops.full((batch, kv_heads, groups, bq), neg, dtype=dtype)
        l0 = ops.zeros((batch, kv_heads, groups, bq), dtype=dtype)
        acc0 = ops.zeros((batch, kv_heads, groups, bq, dv), dtype=dtype)

        def update(j, state):
            m, l, acc = state
            k_start = j * bk
            kb = ops.take(k_blocks, j, axis=1)  # (B, bk, Hkv, D)
            vb = ops.take(v_blocks, j, axis=1)  # (B, bk, Hkv, Dv)
            s = naive.logits(problem, qb, kb)  # (B, Hkv, G, bq, bk)
            block_bias = _block_of(bias, q_start, bq, k_start, bk)
            if block_bias is not None:
                s = s + ops.cast(block_bias, dtype)
            valid = None
            if tv_pad != tv:
                valid = (ops.arange(bk, dtype="int32") + k_start < tv)[None, :]
            block_mask = combine_masks(
                valid,
                problem.position_mask(q_start, bq, k_start, bk),
                _block_of(mask, q_start, bq, k_start, bk),
            )
            if block_mask is not None:
                s = ops.where(block_mask, s, neg)
            m_new = ops.maximum(m, ops.max(s, axis=-1))
            p = ops.exp(s - m_new[..., None])
            if block_mask is not None:
                p = p * ops.cast(block_mask, dtype)
            correction = ops.exp(m - m_new)
            l_new = l * correction + ops.sum(p, axis=-1)
            pv = ops.einsum("bhgqk,bkhd->bhgqd", p, vb)  # (B, Hkv, G, bq, Dv)
            return m_new, l_new, acc * correction[..., None] + pv

        def body(j, state):
            keep = needed(q_start, j * bk)
            if keep is None:
                return update(j, state)
            return ops.cond(keep, lambda: update(j, state), lambda: state)

        _, l, acc = ops.fori_loop(0, nk, body, (m0, l0, acc0))
        return acc / ops.where(l > 0, l, ops.ones_like(l))[..., None]  # (B, Hkv, G, bq, Dv)

    blocks = ops.map(query_block, ops.arange(nq, dtype="int32"))  # (nq, B, Hkv, G, bq, Dv)
    out = ops.transpose(blocks, (1, 0, 4, 2, 3, 5))  # (B, nq, bq, Hkv, G, Dv)
    out = ops.reshape(out, (batch, tq_pad, kv_heads, groups, dv))[:, :tq]
    return ops.cast(out, out_dtype)
