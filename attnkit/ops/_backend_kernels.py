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
"""

from __future__ import annotations

import functools

import keras

from attnkit.ops import chunked


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
