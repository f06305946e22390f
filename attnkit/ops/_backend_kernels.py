"""Backend-specific glue, kept in this one module.

Two things need a backend's own API, each chosen from a measurement recorded in
docs/BENCHMARKS.md:

1. Attaching the recomputing FlashAttention-2 backward of
   ``attnkit.ops.chunked`` to its forward: ``jax.custom_vjp``,
   ``tf.custom_gradient`` and ``torch.autograd.Function``. Without it, autodiff
   through the blocked loops stores every block's probabilities (O(N²) memory).
   The math itself is written once, in ``chunked.forward``/``chunked.backward``.
2. PyTorch's fused ``scaled_dot_product_attention`` with ``enable_gqa``:
   ``keras.ops.dot_product_attention`` repeats the key/value heads for
   grouped-query attention on torch, which this avoids.
3. Causal attention on TensorFlow in query blocks (``tf_causal_blocks``): it
   needs ``tf.map_fn`` over heads and ``transpose_b`` matmuls, so that each
   block's key/value prefix is a free slice rather than a copy.
"""

from __future__ import annotations

import functools

import keras

from attnkit.ops import chunked
from attnkit.ops.masks import large_negative, position_mask
from attnkit.ops.softmax import softmax_dtype


def flash_attention(query, key, value, mask, cfg):
    """Blocked attention with an O(N)-memory backward.

    ``query`` (B, Tq, Hkv, G, D) already scaled, ``key`` (B, Tv, Hkv, D),
    ``value`` (B, Tv, Hkv, Dv), all in the softmax dtype; ``mask`` bool
    (B|1, Hkv|1, G|1, Tq|1, Tv|1) or None (not differentiated); ``cfg`` a
    ``chunked.Blocking``. Returns (B, Tq, Hkv, G, Dv).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_flash(query, key, value, mask, cfg)
    if backend == "tensorflow":
        return _tf_flash(query, key, value, mask, cfg)
    if backend == "torch":
        return _torch_flash(query, key, value, mask, cfg)
    return chunked.forward(query, key, value, mask, cfg)[0]


# JAX ---------------------------------------------------------------------------


@functools.cache
def _jax_flash_fn():
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
    def flash(query, key, value, mask, cfg):
        return chunked.forward(query, key, value, mask, cfg)[0]

    def flash_fwd(query, key, value, mask, cfg):
        out, lse = chunked.forward(query, key, value, mask, cfg)
        return out, (query, key, value, mask, out, lse)

    def flash_bwd(cfg, residuals, d_out):
        query, key, value, mask, out, lse = residuals
        dq, dk, dv = chunked.backward(query, key, value, mask, cfg, out, lse, d_out)
        return dq, dk, dv, None

    flash.defvjp(flash_fwd, flash_bwd)
    return flash


def _jax_flash(query, key, value, mask, cfg):
    return _jax_flash_fn()(query, key, value, mask, cfg)


# TensorFlow --------------------------------------------------------------------


def _tf_flash(query, key, value, mask, cfg):
    import tensorflow as tf

    @tf.custom_gradient
    def flash(query, key, value):
        out, lse = chunked.forward(query, key, value, mask, cfg)

        def grad(d_out):
            return chunked.backward(query, key, value, mask, cfg, out, lse, d_out)

        return out, grad

    return flash(query, key, value)


# PyTorch -----------------------------------------------------------------------


@functools.cache
def _torch_function():
    import torch

    class Flash(torch.autograd.Function):
        @staticmethod
        def forward(ctx, query, key, value, mask, cfg):
            out, lse = chunked.forward(query, key, value, mask, cfg)
            ctx.save_for_backward(query, key, value, out, lse)
            ctx.mask, ctx.cfg = mask, cfg
            return out

        @staticmethod
        def backward(ctx, d_out):
            query, key, value, out, lse = ctx.saved_tensors
            with torch.no_grad():
                dq, dk, dv = chunked.backward(query, key, value, ctx.mask, ctx.cfg, out, lse, d_out)
            return dq, dk, dv, None, None

    return Flash


def _torch_flash(query, key, value, mask, cfg):
    import torch

    if not any(torch.is_tensor(x) and x.requires_grad for x in (query, key, value)):
        with torch.no_grad():
            return chunked.forward(query, key, value, mask, cfg)[0]
    return _torch_function().apply(query, key, value, mask, cfg)


def torch_sdpa(query, key, value, mask=None, is_causal=False, scale=1.0):
    """``F.scaled_dot_product_attention`` in the (B, T, H, D) layout,
    grouped-query heads shared without copies. ``mask`` bool (B|1, H|1, Tq, Tv)."""
    import torch.nn.functional as F

    q = query.permute(0, 2, 1, 3)  # (B, H, Tq, D)
    k = key.permute(0, 2, 1, 3)  # (B, Hkv, Tv, D)
    v = value.permute(0, 2, 1, 3)
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
    )  # (B, H, Tq, Dv)
    return out.permute(0, 2, 1, 3)


# TensorFlow causal blocks ------------------------------------------------------

# Causal attention through a materialising kernel computes and then discards
# the masked half of the scores. Split into query blocks, block i needs only
# the keys up to its last row: sum_i (i + 1) / n^2 = 0.53 of the work at
# n = 16 blocks. TensorFlow slices copy unless they cut the outermost axis of
# a tensor, so the blocks run per (batch, key/value head) under tf.map_fn,
# where q, k and v are 2-D and every block's rows and key prefix are views;
# the rows of the G query heads sharing a key/value head are interleaved
# (T * G, D), so grouped-query heads share K/V without repeating them. Each
# block's scores get one additive mask (rows, 1, keys), built once and shared
# by every head. Measured on TensorFlow, forward, B=1, H=8, D=64, one process,
# alternating calls (docs/BENCHMARKS.md): causal / non-causal 0.53x at N=4096,
# 0.50x at N=8192 (batched blocks with copied prefixes: 0.60x; 24 or 32
# blocks, or parallel_iterations 1 or 4, no better).
CAUSAL_QUERY_BLOCKS = 16
CAUSAL_MIN_BLOCK_ROWS = 256


def tf_causal_blocks(query, key, value, scale):
    """Top-left causal attention, blocked over queries; lengths must be static.

    ``query`` (B, Tq, Hkv, G, D), ``key`` (B, Tv, Hkv, D), ``value`` (B, Tv, Hkv,
    Dv) -> (B, Tq, Hkv, G, Dv). Row r sees keys 0..r (every key once r >= Tv);
    each block's rows see their whole key prefix, so every block is an exact
    softmax on its own.
    """
    import tensorflow as tf

    _, tq, kv_heads, groups, d = query.shape
    tv, dv = key.shape[1], value.shape[-1]
    batch = tf.shape(query)[0]
    # Logits and softmax in at least float32, as keras' kernel does.
    logits_dtype = softmax_dtype(query.dtype)
    q = tf.transpose(query * tf.cast(scale, query.dtype), (0, 2, 1, 3, 4))  # (B, Hkv, Tq, G, D)
    q = tf.reshape(q, (-1, tq * groups, d))  # (B * Hkv, Tq * G, D)
    k = tf.reshape(tf.transpose(key, (0, 2, 1, 3)), (-1, tv, d))  # (B * Hkv, Tv, D)
    v = tf.reshape(tf.transpose(value, (0, 2, 1, 3)), (-1, tv, dv))

    size = max(CAUSAL_MIN_BLOCK_ROWS, -(-tq // CAUSAL_QUERY_BLOCKS))
    blocks = []
    for start in range(0, tq, size):
        stop = min(start + size, tq)
        visible = min(stop, tv)  # keys 0 .. visible - 1 seen by some row
        seen = position_mask(
            tf.range(start, stop)[:, None, None],
            tf.range(visible)[None, None],
            causal="top_left",
            window=None,
        )  # (rows, 1, keys)
        penalty = tf.where(seen, 0.0, large_negative(logits_dtype))
        blocks.append((start, stop, visible, tf.cast(penalty, logits_dtype)))  # (rows, 1, keys)

    def one_head(qkv):
        q_h, k_h, v_h = qkv  # (Tq * G, D), (Tv, D), (Tv, Dv)
        outs = []
        for start, stop, visible, penalty in blocks:
            rows = stop - start
            scores = tf.matmul(q_h[start * groups : stop * groups], k_h[:visible], transpose_b=True)
            scores = tf.reshape(tf.cast(scores, logits_dtype), (rows, groups, visible)) + penalty
            probs = tf.cast(tf.nn.softmax(scores, axis=-1), v_h.dtype)
            outs.append(tf.matmul(tf.reshape(probs, (rows * groups, visible)), v_h[:visible]))
        return outs[0] if len(outs) == 1 else tf.concat(outs, axis=0)  # (Tq * G, Dv)

    out = tf.map_fn(one_head, (q, k, v), fn_output_signature=value.dtype, parallel_iterations=2)
    out = tf.reshape(out, (batch, kv_heads, tq, groups, dv))
    return tf.transpose(out, (0, 2, 1, 3, 4))
