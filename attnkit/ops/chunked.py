"""Exact attention in O(N) memory: online softmax over query and key blocks.

Milakov & Gimelshein 2018 (online softmax), Rabe & Staats 2021
(arXiv:2112.05682), Dao et al. 2022/2023 (FlashAttention, FlashAttention-2).
For each query block the keys are visited block by block, keeping a running
max ``m``, denominator ``l`` (``denom``) and unnormalised output ``acc``:

    m' = max(m, rowmax(s));  p = exp(s - m') · mask
    l' = l · exp(m - m') + rowsum(p);  acc' = acc · exp(m - m') + p v

The forward pass also returns the log-sum-exp ``lse = m + log(l)`` of every
query row. The backward pass (FlashAttention-2) recomputes each block's
probabilities from it, ``p = exp(s - lse)``, instead of storing them:

    dv += pᵀ do;  dp = do vᵀ;  ds = p · (dp - rowsum(do · o));  dq += ds k;  dk += dsᵀ q

so training needs O(N) memory too. ``backend.custom_vjp`` attaches this
backward to the forward with each backend's custom-gradient mechanism; with a
``bias`` or a non-dot score the forward is differentiated by plain autodiff
instead. On torch both passes run by query row blocks against every key a
block sees (``rows_forward``, ``rows_backward``: few large eager operations),
and probabilities below e^-80 are set to zero (``backend.flush_small``:
torch's CPU kernels pay a microcode assist per subnormal float).

Attention dropout (on the softmax weights, as Keras and PyTorch apply it)
multiplies the ``p`` that reaches the values by an inverted-dropout factor
``z`` (``1 / (1 - rate)`` or 0) while ``l`` sums the undropped ``p``; ``z`` is a
pure function of a per-call key and the weight's global indices
(``counter_noise.dropout_factor``), so the backward regenerates it block by
block: ``dv += (p·z)ᵀ do`` and ``dp = (do vᵀ)·z``, with ``rowsum(do · o)``
unchanged. The naive path draws the same mask.

Blocks that a causal or window mask hides entirely are skipped, not computed and
discarded. Grouped-query attention never repeats keys: a key block is matched
against the G query heads that share it in one batched matmul. Written once
with ``keras.ops`` (``map``, ``fori_loop``, ``cond``), so it runs on every
backend.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from attnkit import _checks
from attnkit.ops import backend, counter_noise, modding, naive
from attnkit.ops.block_sparsity import BLOCK_EMPTY, BLOCK_FULL
from attnkit.ops.masks import combine_masks, large_negative, position_mask
from attnkit.ops.softmax import softmax_dtype

# (query_block, key_block), from the block-size sweep in docs/BENCHMARKS.md.
DEFAULT_BLOCK = (256, 512)
# Under a causal or window mask, square blocks waste less of the blocks that
# straddle the diagonal: causal at N=4096 cost 0.57x of non-causal with
# (256, 256) against 0.67x with (256, 512) on TensorFlow, 0.70x vs 0.74x on
# JAX (one process, alternating calls; docs/BENCHMARKS.md).
DEFAULT_MASKED_BLOCK = (256, 256)


def _validate_block_size(block_size):
    if block_size is None:
        return DEFAULT_BLOCK
    return _checks.positive_int_pair(
        block_size, "block_size", "a pair of positive integers (query_block, key_block) or None"
    )


@dataclass(frozen=True)
class Blocking:
    """Static description of a blocked problem (hashable: a JAX static argument)."""

    tq: int
    tv: int
    bq: int
    bk: int
    causal: str | None
    window: int | None
    offset: int
    heads: int = 1
    score_mod: object = None  # see ops.modding
    mask_mod: object = None
    has_sinks: bool = False
    n_params: int = 0  # score_mod's parameters, after (q, k, v[, sinks]) in the inputs
    table: tuple | None = None  # BlockMask.table: (nq, nk) of EMPTY/PARTIAL/FULL
    kv_heads: int = 1
    dropout: float = 0.0  # the rate; its key travels in ``aux``
    residual: bool = True  # rows_forward: whether the log-sum-exp is needed (a backward)

    def _table_entry(self, q_start, k_start):
        flat = ops.convert_to_tensor([c for row in self.table for c in row], "int32")
        index = (q_start // self.bq) * self.nk + k_start // self.bk
        return ops.take(flat, index)

    @property
    def nq(self):
        return math.ceil(self.tq / self.bq)

    @property
    def nk(self):
        return math.ceil(self.tv / self.bk)

    @property
    def tq_pad(self):
        return self.nq * self.bq

    @property
    def tv_pad(self):
        return self.nk * self.bk

    def needed(self, q_start, k_start):
        """False when the causal/window mask hides the whole (q, k) block; None
        when nothing can be skipped."""
        q_first = q_start + self.offset
        q_last = q_first + self.bq - 1
        keep = None
        if self.table is not None:
            keep = self._table_entry(q_start, k_start) != BLOCK_EMPTY
        if self.causal is not None:
            keep = k_start <= q_last if keep is None else ops.logical_and(keep, k_start <= q_last)
        if self.window is not None:
            near = ops.logical_and(
                k_start + self.bk - 1 > q_first - self.window,
                k_start < q_last + self.window,
            )
            keep = near if keep is None else ops.logical_and(keep, near)
        return keep

    def fully_visible(self, q_start, k_start):
        """True when no causal/window/padding/block-mask entry of the block is
        masked; None when there is nothing to decide per block (no causal or
        window mask, no block table)."""
        if self.causal is None and self.window is None and self.table is None:
            return None
        q_first = q_start + self.offset
        q_last = q_first + self.bq - 1
        k_last = k_start + self.bk - 1
        visible = k_last < self.tv  # no padded keys
        if self.table is not None:
            visible = ops.logical_and(visible, self._table_entry(q_start, k_start) == BLOCK_FULL)
        if self.causal is not None:
            visible = ops.logical_and(visible, k_last <= q_first)
        if self.window is not None:
            widest = ops.maximum(q_last - k_start, k_last - q_first)
            visible = ops.logical_and(visible, widest < self.window)
        return visible

    def position_mask(self, q_start, k_start):
        """(bq, bk) mask from causal, window and key padding, or None."""
        mask = None
        if self.causal is not None or self.window is not None:
            q_pos = ops.arange(self.bq, dtype="int32") + (q_start + self.offset)
            k_pos = ops.arange(self.bk, dtype="int32") + k_start
            mask = position_mask(
                q_pos[:, None], k_pos[None, :], causal=self.causal, window=self.window
            )
        if self.tv_pad != self.tv:
            valid = (ops.arange(self.bk, dtype="int32") + k_start < self.tv)[None, :]
            mask = valid if mask is None else ops.logical_and(mask, valid)
        return mask


def blocking(problem, block_size=None, dropout=0.0):
    table = None
    if problem.block_mask is not None:
        if block_size is not None and tuple(block_size) != problem.block_mask.block_size:
            raise ValueError(
                "`block_size` must equal the block mask's block size "
                f"{problem.block_mask.block_size} (or be None). Received: block_size={block_size!r}"
            )
        if problem.block_mask.offset != problem.offset:
            raise ValueError(
                "`block_mask` was built for another alignment: its queries start at key "
                f"position {problem.block_mask.offset}, this call's at {problem.offset}. "
                f"Received: block_mask={problem.block_mask!r}"
            )
        block_size, table = problem.block_mask.block_size, problem.block_mask.table
    if block_size is None and (problem.causal is not None or problem.window is not None):
        block_size = DEFAULT_MASKED_BLOCK
    bq, bk = _validate_block_size(block_size)
    tq, tv = problem.query_length, problem.key_length
    return Blocking(
        tq=tq,
        tv=tv,
        bq=min(bq, tq),
        bk=min(bk, tv),
        causal=problem.causal,
        window=problem.window,
        offset=problem.offset,
        heads=problem.num_heads,
        score_mod=problem.score_mod,
        mask_mod=problem.mask_mod,
        has_sinks=problem.sinks is not None,
        n_params=len(problem.score_mod_params),
        table=table,
        kv_heads=problem.num_kv_heads,
        dropout=dropout,
    )


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


def _query_blocks(x, cfg):
    """(B, Tq, Hkv, G, D) -> (nq, B, Hkv, G, bq, D): head-major blocks, so every
    block product is a plain batched matmul with no transposes in the loop."""
    batch, _, kv_heads, groups, d = ops.shape(x)
    x = ops.reshape(_pad_axis(x, 1, cfg.tq_pad), (batch, cfg.nq, cfg.bq, kv_heads, groups, d))
    return ops.transpose(x, (1, 0, 3, 4, 2, 5))


def _query_rows(x, cfg, pad_value=0):
    """(B, Hkv, G, Tq) -> (nq, B, Hkv, G, bq)."""
    batch, kv_heads, groups, _ = ops.shape(x)
    if x.shape[3] != cfg.tq_pad:
        x = ops.pad(x, [(0, 0)] * 3 + [(0, cfg.tq_pad - x.shape[3])], constant_values=pad_value)
    x = ops.reshape(x, (batch, kv_heads, groups, cfg.nq, cfg.bq))
    return ops.transpose(x, (3, 0, 1, 2, 4))


def _key_blocks(x, cfg):
    """(B, Tv, Hkv, D) -> (nk, B, Hkv, bk, D)."""
    batch, _, kv_heads, d = ops.shape(x)
    x = ops.reshape(_pad_axis(x, 1, cfg.tv_pad), (batch, cfg.nk, cfg.bk, kv_heads, d))
    return ops.transpose(x, (1, 0, 3, 2, 4))


def _from_query_blocks(x, cfg):
    """(nq, B, Hkv, G, bq, D) -> (B, Tq, Hkv, G, D)."""
    _, batch, kv_heads, groups, _, d = ops.shape(x)
    x = ops.transpose(x, (1, 0, 4, 2, 3, 5))  # (B, nq, bq, Hkv, G, D)
    return ops.reshape(x, (batch, cfg.tq_pad, kv_heads, groups, d))[:, : cfg.tq]


def _from_key_blocks(x, cfg):
    """(nk, B, Hkv, bk, D) -> (B, Tv, Hkv, D)."""
    _, batch, kv_heads, _, d = ops.shape(x)
    x = ops.transpose(x, (1, 0, 3, 2, 4))  # (B, nk, bk, Hkv, D)
    return ops.reshape(x, (batch, cfg.tv_pad, kv_heads, d))[:, : cfg.tv]


def _rows(x):
    """(B, Hkv, G, bq, X) -> (B, Hkv, G·bq, X): a free reshape that lets every
    block product be a plain batched matmul (several contracted axes at once
    take a slow path in XLA on CPU)."""
    b, h, g, q, last = ops.shape(x)
    return ops.reshape(x, (b, h, g * q, last))


def _qk(qb, kb):
    """(B, Hkv, G, bq, D) x (B, Hkv, bk, D) -> (B, Hkv, G, bq, bk)."""
    b, h, g, q, _ = ops.shape(qb)
    s = backend.matmul_transposed(_rows(qb), kb)  # (B, Hkv, G·bq, bk)
    return ops.reshape(s, (b, h, g, q, kb.shape[2]))


def _pv(pb, vb):
    """(B, Hkv, G, bq, bk) x (B, Hkv, bk, Dv) -> (B, Hkv, G, bq, Dv)."""
    b, h, g, q, _ = ops.shape(pb)
    out = ops.einsum("bhmk,bhkd->bhmd", _rows(pb), vb)
    return ops.reshape(out, (b, h, g, q, vb.shape[-1]))


def _ptx(pb, xb):
    """(B, Hkv, G, bq, bk)ᵀ x (B, Hkv, G, bq, D) summed over G -> (B, Hkv, bk, D)."""
    return ops.einsum("bhmk,bhmd->bhkd", _rows(pb), _rows(xb))


def _loop(n, body, init, skip_test):
    """fori_loop over blocks; ``skip_test(j)`` is None or False when block j is hidden."""

    def guarded(j, state):
        keep = skip_test(j)
        if keep is None:
            return body(j, state)
        return ops.cond(keep, lambda: body(j, state), lambda: state)

    return ops.fori_loop(0, n, guarded, init)


def _masked_logits(s, block_mask, neg):
    if block_mask is None:
        return s
    return ops.where(block_mask, s, neg)


def _split(inputs, cfg):
    """(query, key, value[, sinks], *params) -> (query, key, value, sinks, params)."""
    query, key, value = inputs[:3]
    sinks = inputs[3] if cfg.has_sinks else None
    params = tuple(inputs[3 + cfg.has_sinks :])
    return query, key, value, sinks, params


def _block_masks(cfg, mask, q_start, k_start, idx, groups, positional):
    """The block's mask from causal/window/padding (when ``positional``), the
    ``mask`` tensor and ``mask_mod`` (skipped on blocks the table marks full)."""
    mod_mask = None
    if cfg.mask_mod is not None and (positional or cfg.table is None):
        mod_mask = modding.evaluate_mask_mod(cfg.mask_mod, idx, cfg.heads, groups)
    return combine_masks(
        cfg.position_mask(q_start, k_start) if positional else None,
        _block_of(mask, q_start, cfg.bq, k_start, cfg.bk),
        mod_mask,
    )


def _dropout_rows(cfg, key, batch, q_start):
    """Dropout row hashes (B, Hkv, G, bq) of a query block, or None."""
    if not cfg.dropout:
        return None
    return counter_noise.dropout_rows(key, batch, cfg.heads, cfg.kv_heads, q_start, cfg.bq)


def _dropped(p, rows, cfg, k_start):
    """``p`` (B, Hkv, G, bq, bk) times the block's inverted-dropout factors."""
    if rows is None:
        return p
    return p * counter_noise.dropout_factor(rows, cfg.dropout, k_start, cfg.bk, p.dtype)


def _indices(cfg, batch, q_start, k_start):
    if cfg.score_mod is None and cfg.mask_mod is None:
        return None
    return modding.block_indices(
        batch, cfg.heads, q_start, cfg.bq, k_start, cfg.bk, offset=cfg.offset, tq=cfg.tq, tv=cfg.tv
    )


def forward(inputs, aux, cfg, *, bias=None, logits_fn=None):
    """Blocked forward pass.

    ``inputs`` is ``(query, key, value[, sinks], *score_mod_params)``: ``query``
    (B, Tq, Hkv, G, D) already scaled, ``key`` (B, Tv, Hkv, D), ``value``
    (B, Tv, Hkv, Dv), all in the softmax dtype; ``sinks`` (Hkv, G). ``aux`` is
    ``(mask, dropout_key)``, ``mask`` a padded-free bool (B|1, Hkv|1, G|1,
    Tq|1, Tv|1) or None, ``dropout_key`` the int32 key of
    ``counter_noise.dropout_key`` (used when ``cfg.dropout`` > 0) or None.
    Dropout multiplies the probabilities that reach the values, not those of
    the denominator (inverted dropout of the softmax weights).
    ``logits_fn(q_block, k_block)`` maps head-major blocks to (B, Hkv, G, bq,
    bk); the default is the dot product. Returns the output (B, Tq, Hkv, G,
    Dv) and the log-sum-exp (B, Hkv, G, Tq) (0 on rows with nothing to attend
    to and no sink).
    """
    query, key, value, sinks, params = _split(inputs, cfg)
    mask, dropout_key = aux
    dtype = softmax_dtype(query.dtype)
    batch, _, kv_heads, groups, _ = ops.shape(query)
    dv = value.shape[-1]
    q_blocks = _query_blocks(query, cfg)  # (nq, B, Hkv, G, bq, D)
    k_blocks = _key_blocks(key, cfg)  # (nk, B, Hkv, bk, D)
    v_blocks = _key_blocks(value, cfg)  # (nk, B, Hkv, bk, Dv)
    mask = _pad_grouped(mask, cfg.tq_pad, cfg.tv_pad)
    bias = _pad_grouped(bias, cfg.tq_pad, cfg.tv_pad)
    neg = large_negative(dtype)
    if logits_fn is None:

        def logits_fn(qb, kb):
            return _qk(qb, kb)  # (B, Hkv, G, bq, bk)

    def query_block(i):
        q_start = i * cfg.bq
        qb = ops.take(q_blocks, i, axis=0)  # (B, Hkv, G, bq, D)
        drop_rows = _dropout_rows(cfg, dropout_key, batch, q_start)  # (B, Hkv, G, bq) or None
        rows = (batch, kv_heads, groups, cfg.bq)
        if sinks is None:
            m0 = ops.full(rows, neg, dtype=dtype)
            denom0 = ops.zeros(rows, dtype=dtype)
        else:
            # The sink is a key of logit sinks[h] and value 0: it starts the
            # running max and adds exp(sink - m) to the denominator.
            m0 = ops.broadcast_to(ops.cast(sinks, dtype)[None, :, :, None], rows)
            denom0 = ops.ones(rows, dtype=dtype)
        acc0 = ops.zeros((batch, kv_heads, groups, cfg.bq, dv), dtype=dtype)

        def update(j, state):
            full = cfg.fully_visible(q_start, j * cfg.bk)
            if full is None:
                return block_update(j, state, True)
            # Blocks wholly inside the causal/window band (or marked full by
            # the block mask) skip building and applying their masks (about a
            # third of a block's work).
            return ops.cond(
                full,
                lambda: block_update(j, state, False),
                lambda: block_update(j, state, True),
            )

        def block_update(j, state, positional):
            m, denom, acc = state
            k_start = j * cfg.bk
            idx = _indices(cfg, batch, q_start, k_start)
            s = logits_fn(qb, ops.take(k_blocks, j, axis=0))  # (B, Hkv, G, bq, bk)
            block_bias = _block_of(bias, q_start, cfg.bq, k_start, cfg.bk)
            if block_bias is not None:
                s = s + ops.cast(block_bias, dtype)
            if cfg.score_mod is not None:
                s = modding.apply_score_mod(cfg.score_mod, s, idx, params)
            block_mask = _block_masks(cfg, mask, q_start, k_start, idx, groups, positional)
            s = _masked_logits(s, block_mask, neg)
            m_new = ops.maximum(m, ops.max(s, axis=-1))
            p = ops.exp(s - m_new[..., None])
            if block_mask is not None:
                p = p * ops.cast(block_mask, dtype)
            correction = ops.exp(m - m_new)
            denom_new = denom * correction + ops.sum(p, axis=-1)
            pv = _pv(_dropped(p, drop_rows, cfg, k_start), ops.take(v_blocks, j, axis=0))
            return (
                m_new,
                denom_new,
                acc * correction[..., None] + pv,
            )  # acc (B, Hkv, G, bq, Dv)

        m, denom, acc = _loop(
            cfg.nk, update, (m0, denom0, acc0), lambda j: cfg.needed(q_start, j * cfg.bk)
        )
        has_key = denom > 0
        safe_l = ops.where(has_key, denom, ops.ones_like(denom))
        lse = ops.where(has_key, m + ops.log(safe_l), ops.zeros_like(denom))
        return acc / safe_l[..., None], lse

    out, lse = ops.map(query_block, ops.arange(cfg.nq, dtype="int32"))
    out = _from_query_blocks(out, cfg)  # (B, Tq, Hkv, G, Dv)
    lse = ops.transpose(lse, (1, 2, 3, 0, 4))  # (B, Hkv, G, nq, bq)
    lse = ops.reshape(lse, (batch, kv_heads, groups, cfg.tq_pad))[..., : cfg.tq]
    return out, lse


def backward(inputs, aux, cfg, out, lse, d_out):
    """FlashAttention-2 backward of :func:`forward` (dot-product logits, no bias).

    Recomputes each block's probabilities from ``lse``; two sweeps, one over
    query blocks for dq and one over key blocks for dk and dv, so that every
    gradient is written once (no scattered accumulation) on every backend. A
    ``score_mod`` is differentiated block by block (``backend.vjp``): its
    parameters' gradients are summed over the key-block sweep, so they need
    O(N) memory too. Sinks: ``d sink = -sum_rows exp(sink - lse) · delta``.
    Dropout (factors z regenerated from the key): ``dv += (p·z)ᵀ do`` and
    ``dp = (do vᵀ)·z``; ``delta = rowsum(do · o)`` still equals
    ``rowsum(p · dp)`` because ``o = (p·z) v``.
    Returns the gradients of ``inputs``, in their layouts.
    """
    query, key, value, sinks, params = _split(inputs, cfg)
    mask, dropout_key = aux
    dtype = query.dtype
    batch, _, _, groups, _ = ops.shape(query)
    q_blocks = _query_blocks(query, cfg)  # (nq, B, Hkv, G, bq, D)
    do_blocks = _query_blocks(d_out, cfg)  # (nq, B, Hkv, G, bq, Dv)
    delta = ops.transpose(ops.sum(d_out * out, axis=-1), (0, 2, 3, 1))  # (B, Hkv, G, Tq)
    delta_blocks = _query_rows(delta, cfg)  # (nq, B, Hkv, G, bq)
    # Padded query rows get an lse no logit reaches, so their p is 0 whatever
    # a score_mod makes of them (exp could overflow: inf * 0 is NaN).
    lse_blocks = _query_rows(lse, cfg, pad_value=-large_negative(dtype))  # (nq, B, Hkv, G, bq)
    k_blocks = _key_blocks(key, cfg)  # (nk, B, Hkv, bk, D)
    v_blocks = _key_blocks(value, cfg)  # (nk, B, Hkv, bk, Dv)
    mask = _pad_grouped(mask, cfg.tq_pad, cfg.tv_pad)
    neg = large_negative(dtype)

    def probs_and_dlogits(i, j, with_params):
        """p (after dropout), ds (each (B, Hkv, G, bq, bk)) of block (i, j) and,
        when ``with_params``, the block's share of the score_mod parameters' gradients."""
        q_start, k_start = i * cfg.bq, j * cfg.bk
        idx = _indices(cfg, batch, q_start, k_start)
        qb = ops.take(q_blocks, i, axis=0)
        s = _qk(qb, ops.take(k_blocks, j, axis=0))
        pullback = None
        if cfg.score_mod is not None:
            mod: Callable[..., Any]  # one name, two signatures (mypy)
            if with_params:

                def mod(s, *params):
                    return modding.apply_score_mod(cfg.score_mod, s, idx, params)

                s, pullback = backend.vjp(mod, s, *params)
            else:

                def mod(s):
                    return modding.apply_score_mod(cfg.score_mod, s, idx, params)

                s, pullback = backend.vjp(mod, s)
        block_mask = _block_masks(cfg, mask, q_start, k_start, idx, groups, True)
        s = _masked_logits(s, block_mask, neg)
        p = backend.exp_flushed(s - ops.take(lse_blocks, i, axis=0)[..., None], reuse=True)
        if block_mask is not None:
            p = p * ops.cast(block_mask, dtype)
        dob = ops.take(do_blocks, i, axis=0)
        dp = _qk(dob, ops.take(v_blocks, j, axis=0))
        drop_rows = _dropout_rows(cfg, dropout_key, batch, q_start)
        if drop_rows is not None:
            factor = counter_noise.dropout_factor(drop_rows, cfg.dropout, k_start, cfg.bk, dtype)
            dp = dp * factor
        ds = p * (dp - ops.take(delta_blocks, i, axis=0)[..., None])
        if drop_rows is not None:
            p = p * factor
        d_params = ()
        if pullback is not None:
            grads = pullback(ds)
            ds, d_params = grads[0], tuple(grads[1:])
        return p, ds, qb, dob, d_params

    def dq_block(i):
        def update(j, dq):
            _, ds, _, _, _ = probs_and_dlogits(i, j, False)
            return dq + _pv(ds, ops.take(k_blocks, j, axis=0))

        dq0 = ops.zeros_like(ops.take(q_blocks, i, axis=0))
        return _loop(cfg.nk, update, dq0, lambda j: cfg.needed(i * cfg.bq, j * cfg.bk))

    def dkv_block(j):
        def update(i, state):
            dk, dv, d_params = state
            p, ds, qb, dob, block_d_params = probs_and_dlogits(i, j, True)
            dv = dv + _ptx(p, dob)
            dk = dk + _ptx(ds, qb)
            pairs = zip(d_params, block_d_params, strict=True)
            d_params = tuple(a + ops.cast(b, a.dtype) for a, b in pairs)
            return dk, dv, d_params

        init = (
            ops.zeros_like(ops.take(k_blocks, j, axis=0)),
            ops.zeros_like(ops.take(v_blocks, j, axis=0)),
            tuple(ops.zeros_like(p) for p in params),
        )
        return _loop(cfg.nq, update, init, lambda i: cfg.needed(i * cfg.bq, j * cfg.bk))

    dq = _from_query_blocks(ops.map(dq_block, ops.arange(cfg.nq, dtype="int32")), cfg)
    dk, dv, d_params = ops.map(dkv_block, ops.arange(cfg.nk, dtype="int32"))
    grads = [dq, _from_key_blocks(dk, cfg), _from_key_blocks(dv, cfg)]
    if sinks is not None:
        p_sink = ops.exp(ops.cast(sinks, dtype)[None, :, :, None] - lse)  # (B, Hkv, G, Tq)
        grads.append(ops.cast(-ops.sum(p_sink * delta, axis=(0, 3)), sinks.dtype))  # (Hkv, G)
    grads.extend(ops.sum(g, axis=0) for g in d_params)
    return tuple(grads)


# The row-block forward ---------------------------------------------------------

# Elements of one row block's scores (B·H·rows·keys): 2**22 is 16 MiB of
# float32, so a block and the few temporaries a score_mod makes stay within
# O(N) memory (rows = 2**22 / (B·H·Tv): 128 at B·H=8, Tv=4096; 16 at Tv=32768).
# Swept on a quiet machine, torch, N=4096, forward, ms (docs/BENCHMARKS.md):
# 2**20 / 2**21 / 2**22 / 2**23 elements: plain 362 / 314 / 275 / 280, user
# ALiBi 501 / 449 / 462 / 623, soft cap 466 / 417 / 411 / 686 (a 32 MiB block
# no longer stays in cache; below 2**21 the dispatch of each op dominates).
# rows_backward uses the same blocks: with 2**20 there, forward + backward at
# N=4096 took 1150 ms against 990 (plain), and the backward of causal plain
# attention at N=32768 190 s against 70 (4-row blocks at the longest rows).
ROW_BLOCK_ELEMENTS = 2**22
# Fewest rows per block (unless the query block has fewer): beyond
# 2**22 / (16·B·H) keys the block grows with the keys instead (still O(N))
# rather than paying each operation's dispatch for a handful of rows. torch,
# 256 queries x 65536 keys, B·H=8, soft cap, forward / forward + backward ms:
# 8 rows 1507 / 7313, 16 rows 1390 / 5962; 128 x 131072: 4 rows 2533 / 15407,
# 16 rows 1528 / 8082, 32 rows 1242 / 8250 (docs/BENCHMARKS.md).
MIN_BLOCK_ROWS = 16


def row_plan(cfg):
    """Static plan of :func:`rows_forward`: one entry per query block of
    ``cfg.bq`` rows, ``(q_start, q_stop, runs, mod_needed, position_needed)``.

    ``runs`` are the disjoint ``(k_start, k_stop)`` key ranges some row of the
    block may see (causal/window band, block-mask table), merged where they
    touch; ``mod_needed`` is False when the table marks every visited block
    full (the mask_mod is then not evaluated); ``position_needed`` is False
    when the causal/window mask hides nothing inside the runs.
    """
    plans = []
    for q0 in range(0, cfg.tq, cfg.bq):
        q1 = min(q0 + cfg.bq, cfg.tq)
        first, last = q0 + cfg.offset, q1 - 1 + cfg.offset  # in key coordinates
        lo, hi = 0, cfg.tv
        if cfg.causal is not None:
            hi = min(hi, last + 1)
        if cfg.window is not None:
            lo, hi = max(lo, first - cfg.window + 1), min(hi, last + cfg.window)
        runs: list[tuple[int, int]] = []
        mod_needed = cfg.mask_mod is not None
        if cfg.table is None:
            if lo < hi:
                runs.append((lo, hi))
        else:
            mod_needed = False
            for j, entry in enumerate(cfg.table[q0 // cfg.bq]):
                a, b = max(j * cfg.bk, lo), min((j + 1) * cfg.bk, hi)
                if entry == BLOCK_EMPTY or a >= b:
                    continue
                mod_needed = mod_needed or entry != BLOCK_FULL
                if runs and runs[-1][1] == a:
                    runs[-1] = (runs[-1][0], b)
                else:
                    runs.append((a, b))
        position_needed = False
        if runs:
            k_first, k_last = runs[0][0], runs[-1][1] - 1
            if cfg.causal is not None and k_last > first:
                position_needed = True
            if cfg.window is not None and max(last - k_first, k_last - first) >= cfg.window:
                position_needed = True
        plans.append((q0, q1, tuple(runs), mod_needed, position_needed))
    return plans


def _gather(x, runs, axis):
    """The ``runs`` of ``x`` along ``axis``, concatenated (a view for one run)."""
    pieces = []
    for a, b in runs:
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(a, b)
        pieces.append(x[tuple(index)])
    return pieces[0] if len(pieces) == 1 else ops.concatenate(pieces, axis=axis)


def _grouped_rows(x, r0, r1, runs):
    """Rows ``[r0, r1)`` and key ``runs`` of a (B|1, Hkv|1, G|1, Tq|1, Tv|1)
    mask or bias (broadcast axes stay 1), or None."""
    if x is None:
        return None
    if x.shape[3] != 1:
        x = x[:, :, :, r0:r1]
    if x.shape[4] != 1:
        x = _gather(x, runs, 4)
    return x


def _row_block_mask(cfg, mask, r0, r1, runs, idx, groups, mod_needed, position_needed):
    """The mask of query rows ``[r0, r1)`` against the key ``runs`` (causal /
    window positions, the ``mask`` tensor, ``mask_mod``), or None."""
    q_pos = ops.arange(r0, r1, dtype="int32") + cfg.offset  # (rows,)
    kv_pos = ops.concatenate([ops.arange(a, b, dtype="int32") for a, b in runs])  # (k,)
    return combine_masks(
        position_mask(q_pos[:, None], kv_pos[None, :], causal=cfg.causal, window=cfg.window)
        if position_needed
        else None,
        _grouped_rows(mask, r0, r1, runs),
        modding.evaluate_mask_mod(cfg.mask_mod, idx, cfg.heads, groups)
        if cfg.mask_mod is not None and mod_needed
        else None,
    )


def _row_indices(cfg, batch, r0, r1, runs, mod_needed):
    """The mod indices of rows ``[r0, r1)`` against the key ``runs``, or None
    when neither a score_mod nor a mask_mod (on a block that needs it) reads them."""
    if cfg.score_mod is None and not (cfg.mask_mod is not None and mod_needed):
        return None
    q_pos = ops.arange(r0, r1, dtype="int32") + cfg.offset
    kv_pos = ops.concatenate([ops.arange(a, b, dtype="int32") for a, b in runs])
    return modding.indices(batch, cfg.heads, q_pos, kv_pos)


def _row_step(cfg, known_batch, q0, q1, runs):
    """Rows per block: at most ``ROW_BLOCK_ELEMENTS`` scores, and at least
    ``MIN_BLOCK_ROWS`` rows (or the query block's)."""
    width = sum(b - a for a, b in runs)
    rows = ROW_BLOCK_ELEMENTS // max(1, known_batch * cfg.heads * width)
    return max(1, min(q1 - q0, max(MIN_BLOCK_ROWS, rows)))


def _row_dropout(cfg, dropout_key, batch, r0, r1, runs, dtype):
    """The inverted-dropout factors of rows ``[r0, r1)`` and the key ``runs``."""
    rows_hash = counter_noise.dropout_rows(
        dropout_key, batch, cfg.heads, cfg.kv_heads, r0, r1 - r0
    )  # (B, Hkv, G, rows)
    return ops.concatenate(
        [counter_noise.dropout_factor(rows_hash, cfg.dropout, a, b - a, dtype) for a, b in runs],
        axis=-1,
    )


class _RowResults:
    """The query rows of a (B, Hkv, G, Tq, ...) result, block by block.

    Where the backend writes in place (``backend.writes_in_place``: torch
    with no gradient recorded), into one buffer allocated before the loop:
    block results kept in a list between the blocks' temporaries fragment
    glibc's heap (torch, N=32768, ALiBi + 8 documents + soft cap: the heap
    grew to 7 GiB during the forward with 0.3 GiB of it in use). Elsewhere
    the blocks are kept and concatenated (no in-place writes), so ``put``
    and ``zeros`` must come in row order, every row once.
    """

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), dtype
        self.buffer = ops.zeros(shape, dtype) if backend.writes_in_place() else None
        self.blocks = []

    def put(self, r0, x):
        if self.buffer is None:
            self.blocks.append(x)
        else:
            backend.write_into(self.buffer, x, r0, axis=3)

    def zeros(self, r0, r1):
        if self.buffer is None:  # (the buffer starts at zero)
            shape = (*self.shape[:3], r1 - r0, *self.shape[4:])
            self.blocks.append(ops.zeros(shape, self.dtype))

    def result(self):
        if self.buffer is not None:
            return self.buffer
        return self.blocks[0] if len(self.blocks) == 1 else ops.concatenate(self.blocks, axis=3)


def rows_forward(inputs, aux, cfg, *, bias=None, logits_fn=None, residual=None):
    """:func:`forward`'s result, computed by query row blocks against every
    key they may see at once (an exact softmax per block, no online rescaling).

    Same arguments and returns as :func:`forward`; ``residual`` (default
    ``cfg.residual``) False returns None for the log-sum-exp, which only a
    backward reads. The loop is static Python: blocks and key ranges that
    the causal/window band or the block mask hide are never visited, and a
    block holds at most ``ROW_BLOCK_ELEMENTS`` scores (rows are split
    further for long keys), or ``MIN_BLOCK_ROWS`` rows against very long
    keys, so it stays O(N). Few, large operations per block: on torch's
    eager execution each operation costs a pass over memory and a dispatch,
    which the (256, 512)-block loop paid about 40 times per block
    (docs/BENCHMARKS.md). Keys and values of a block are gathered only when
    the block mask leaves several separate ranges.
    """
    query, key, value, sinks, params = _split(inputs, cfg)
    mask, dropout_key = aux
    residual = cfg.residual if residual is None else residual
    dtype = softmax_dtype(query.dtype)
    batch, _, kv_heads, groups, _ = ops.shape(query)
    dv = value.shape[-1]
    q_rows = ops.transpose(query, (0, 2, 3, 1, 4))  # (B, Hkv, G, Tq, D)
    k_rows = ops.transpose(key, (0, 2, 1, 3))  # (B, Hkv, Tv, D)
    v_rows = ops.transpose(value, (0, 2, 1, 3))  # (B, Hkv, Tv, Dv)
    if logits_fn is None:
        logits_fn = _qk
    neg = large_negative(dtype)
    known_batch = query.shape[0] if isinstance(query.shape[0], int) else 1
    sink_rows = (
        None if sinks is None else ops.cast(sinks, dtype)[None, :, :, None]
    )  # (1, Hkv, G, 1)
    outs = _RowResults((batch, kv_heads, groups, cfg.tq, dv), dtype)
    lses = _RowResults((batch, kv_heads, groups, cfg.tq), dtype) if residual else None
    for q0, q1, runs, mod_needed, position_needed in row_plan(cfg):
        step = _row_step(cfg, known_batch, q0, q1, runs)
        kb = _gather(k_rows, runs, 2) if runs else None  # (B, Hkv, k, D)
        vb = _gather(v_rows, runs, 2) if runs else None  # (B, Hkv, k, Dv)
        for r0 in range(q0, q1, step):
            r1 = min(r0 + step, q1)
            shape = (batch, kv_heads, groups, r1 - r0)
            if not runs:  # nothing visible: zero output, lse of the sink alone (or 0)
                outs.zeros(r0, r1)
                if lses is not None:
                    if sink_rows is None:
                        lses.zeros(r0, r1)
                    else:
                        lses.put(r0, ops.broadcast_to(sink_rows, shape))
                continue
            s = logits_fn(q_rows[:, :, :, r0:r1], kb)  # (B, Hkv, G, rows, k)
            block_bias = _grouped_rows(bias, r0, r1, runs)
            if block_bias is not None:
                s = s + ops.cast(block_bias, dtype)
            idx = _row_indices(cfg, batch, r0, r1, runs, mod_needed)
            if cfg.score_mod is not None:
                s = modding.apply_score_mod(cfg.score_mod, s, idx, params)
            block_mask = _row_block_mask(
                cfg, mask, r0, r1, runs, idx, groups, mod_needed, position_needed
            )
            if block_mask is not None:
                s = ops.where(block_mask, s, neg)
            empty_rows = None
            if residual or sink_rows is not None:
                m = ops.maximum(ops.max(s, axis=-1), neg)  # (B, Hkv, G, rows)
                if sink_rows is not None:
                    m = ops.maximum(m, sink_rows)
                p = backend.exp_flushed(s - m[..., None], reuse=True)
                if block_mask is not None:
                    p = p * ops.cast(block_mask, dtype)
                denom = ops.sum(p, axis=-1)
                if sink_rows is not None:
                    denom = denom + ops.exp(sink_rows - m)
                has_key = denom > 0
                safe = ops.where(has_key, denom, ops.ones_like(denom))
                if lses is not None:
                    lses.put(r0, ops.where(has_key, m + ops.log(safe), ops.zeros_like(denom)))
                # Flushed after the division too: e^-80 / Tv is below it.
                p = backend.flush_small(p / safe[..., None], reuse=True)
            else:
                # One fused softmax; rows that the masks (or a score_mod's
                # -inf) leave without a key get a zero output, not NaN.
                p = backend.flush_small(ops.softmax(s, axis=-1), reuse=True)
                if block_mask is not None or cfg.score_mod is not None:
                    empty_rows = ops.max(s, axis=-1) <= neg  # (B, Hkv, G, rows)
            if cfg.dropout:
                p = p * _row_dropout(cfg, dropout_key, batch, r0, r1, runs, dtype)
            block_out = _pv(p, vb)  # (B, Hkv, G, rows, Dv)
            if empty_rows is not None:
                block_out = ops.where(empty_rows[..., None], ops.zeros_like(block_out), block_out)
            outs.put(r0, block_out)
    out = ops.transpose(outs.result(), (0, 3, 1, 2, 4))  # (B, Tq, Hkv, G, Dv)
    return out, None if lses is None else lses.result()  # lse: (B, Hkv, G, Tq)


def _add_runs(acc, piece, runs):
    """``acc`` (B, Hkv, Tv, X) plus ``piece`` (B, Hkv, k, X) laid out over the
    key ``runs`` (their concatenation); on torch in place (``backend.add_into``)."""
    start = 0
    for a, b in runs:
        acc = backend.add_into(acc, piece[:, :, start : start + b - a], a, axis=2)
        start += b - a
    return acc


def rows_backward(inputs, aux, cfg, out, lse, d_out):
    """:func:`backward`'s gradients, by the row blocks of :func:`rows_forward`.

    One sweep: each query row block, against every key it may see at once,
    recomputes its probabilities from ``lse``, writes its rows of dq and adds
    its share into dk and dv (and into the score_mod parameters' gradients),
    so that every step is a few large operations (torch's eager execution
    pays a pass over memory and a dispatch per operation; the (bq, bk) block
    sweeps of :func:`backward` paid them per small block: docs/BENCHMARKS.md).
    Same arguments and returns as :func:`backward`; the memory is O(N):
    dq, dk and dv, and one block of the forward's size with the few
    temporaries of its derivative.
    """
    query, key, value, sinks, params = _split(inputs, cfg)
    mask, dropout_key = aux
    dtype = query.dtype
    batch, _, kv_heads, groups, _ = ops.shape(query)
    neg = large_negative(dtype)
    known_batch = query.shape[0] if isinstance(query.shape[0], int) else 1
    q_rows = ops.transpose(query, (0, 2, 3, 1, 4))  # (B, Hkv, G, Tq, D)
    do_rows = ops.transpose(d_out, (0, 2, 3, 1, 4))  # (B, Hkv, G, Tq, Dv)
    k_rows = ops.transpose(key, (0, 2, 1, 3))  # (B, Hkv, Tv, D)
    v_rows = ops.transpose(value, (0, 2, 1, 3))  # (B, Hkv, Tv, Dv)
    delta = ops.transpose(ops.sum(d_out * out, axis=-1), (0, 2, 3, 1))  # (B, Hkv, G, Tq)
    # The gradients are written into buffers allocated once (in place on
    # torch), as the forward's results are (``_RowResults``): kept block
    # results between the blocks' temporaries fragment glibc's heap (7.4 GiB
    # peak RSS at N=32768 with ALiBi + documents + soft cap, against 1.2 GiB
    # with every block freed back to the system).
    dq, dk, dv = ops.zeros_like(q_rows), ops.zeros_like(k_rows), ops.zeros_like(v_rows)
    d_params = [ops.zeros_like(p) for p in params]
    for q0, q1, runs, mod_needed, position_needed in row_plan(cfg):
        if not runs:  # nothing visible: no gradient
            continue
        step = _row_step(cfg, known_batch, q0, q1, runs)
        kb = _gather(k_rows, runs, 2)  # (B, Hkv, k, D)
        vb = _gather(v_rows, runs, 2)  # (B, Hkv, k, Dv)
        for r0 in range(q0, q1, step):
            r1 = min(r0 + step, q1)
            qb, dob = q_rows[:, :, :, r0:r1], do_rows[:, :, :, r0:r1]
            s = _qk(qb, kb)  # (B, Hkv, G, rows, k)
            idx = _row_indices(cfg, batch, r0, r1, runs, mod_needed)
            pullback = None
            if cfg.score_mod is not None:

                def mod(s, *mod_params, idx=idx):
                    return modding.apply_score_mod(cfg.score_mod, s, idx, mod_params)

                s, pullback = backend.vjp(mod, s, *params)
            block_mask = _row_block_mask(
                cfg, mask, r0, r1, runs, idx, groups, mod_needed, position_needed
            )
            s = _masked_logits(s, block_mask, neg)
            p = backend.exp_flushed(s - lse[:, :, :, r0:r1, None], reuse=True)
            if block_mask is not None:
                p = p * ops.cast(block_mask, dtype)
            dp = _qk(dob, vb)  # (B, Hkv, G, rows, k)
            if cfg.dropout:
                factor = _row_dropout(cfg, dropout_key, batch, r0, r1, runs, dtype)
                dp = dp * factor
            ds = p * (dp - delta[:, :, :, r0:r1, None])
            if cfg.dropout:
                p = p * factor
            if pullback is not None:
                grads = pullback(ds)
                ds = grads[0]
                pairs = zip(d_params, grads[1:], strict=True)
                d_params = [a + ops.cast(g, a.dtype) for a, g in pairs]
            dq = backend.add_into(dq, _pv(ds, kb), r0, axis=3)  # rows of (B, Hkv, G, Tq, D)
            dk = _add_runs(dk, _ptx(ds, qb), runs)
            dv = _add_runs(dv, _ptx(p, dob), runs)
    grads = [
        ops.transpose(dq, (0, 3, 1, 2, 4)),  # (B, Tq, Hkv, G, D)
        ops.transpose(dk, (0, 2, 1, 3)),  # (B, Tv, Hkv, D)
        ops.transpose(dv, (0, 2, 1, 3)),
    ]
    if sinks is not None:
        p_sink = ops.exp(ops.cast(sinks, dtype)[None, :, :, None] - lse)  # (B, Hkv, G, Tq)
        grads.append(ops.cast(-ops.sum(p_sink * delta, axis=(0, 3)), sinks.dtype))  # (Hkv, G)
    grads.extend(d_params)
    return tuple(grads)


# Blocked attention with the O(N)-memory backward: ``inputs`` = (query, key,
# value[, sinks], *score_mod_params) as in ``forward``, all differentiated;
# ``aux`` = (mask, dropout_key) not differentiated; ``cfg`` a ``Blocking``. Returns
# (B, Tq, Hkv, G, Dv).
flash_attention = backend.custom_vjp(forward, backward)
# The same by row blocks, forward and backward (the loop ``dispatch.chunked_loop`` picks).
rows_attention = backend.custom_vjp(rows_forward, rows_backward)


def uses_custom_gradient(problem):
    """The recomputing backward covers dot-product logits without a bias."""
    return problem.score_name == "dot" and problem.bias is None


def attend(problem, block_size=None, dropout=0.0, dropout_key=None):
    """Returns the output (B, Tq, Hkv, G, Dv), computed block by block.

    ``dropout`` > 0: the weights reaching the values are multiplied by
    ``counter_noise.dropout_factor`` of ``dropout_key``, regenerated block by
    block in the forward and the backward (nothing of size Tq·Tv is stored);
    the naive path draws exactly the same mask. The forward loop is the one
    ``dispatch.chunked_loop`` picks for the backend (``"rows"``:
    :func:`rows_forward`, else :func:`forward`); both share the backward.
    """
    from attnkit.ops import dispatch

    cfg = blocking(problem, block_size, dropout)
    aux = (problem.mask, dropout_key if dropout > 0 else None)
    query = naive.prescaled_query(problem)  # in the softmax dtype
    dtype = softmax_dtype(query.dtype)
    out_dtype = keras.backend.result_type(problem.query.dtype, problem.value.dtype)
    value = ops.cast(problem.value, dtype)
    extras = () if problem.sinks is None else (ops.cast(problem.sinks, dtype),)
    extras += problem.score_mod_params
    rows = dispatch.chunked_loop() == "rows"
    if uses_custom_gradient(problem):
        inputs = (ops.cast(query, dtype), ops.cast(problem.key, dtype), value) + extras
        if rows:
            cfg = dataclasses.replace(cfg, residual=dispatch.residual_needed(*inputs))
            out = rows_attention(inputs, aux, cfg)
        else:
            out = flash_attention(inputs, aux, cfg)
        return ops.cast(out, out_dtype)

    def logits_fn(qb, kb):
        return naive.logits(problem, qb, kb)  # (B, Hkv, G, bq, bk)

    out, _ = (rows_forward if rows else forward)(
        (query, problem.key, value) + extras,
        aux,
        cfg,
        bias=problem.bias,
        logits_fn=logits_fn,
    )
    return ops.cast(out, out_dtype)
