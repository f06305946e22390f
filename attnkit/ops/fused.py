"""The backend's own kernel, through ``keras.ops.dot_product_attention`` (torch:
SDPA; TensorFlow causal: blocked, ``_backend_kernels.tf_causal_blocks``)."""

from __future__ import annotations

import keras
from keras import ops

from attnkit.ops.masks import combine_masks, large_negative


def attend(problem):
    """Returns the output (B, Tq, Hkv, G, Dv)."""
    # The kernels scale the scores themselves (cheaper than scaling q first:
    # a separate multiply cost 7 ms of 29 at N=1024 on torch).
    query = problem.query
    scale = 1.0 if problem.scale is None else float(problem.scale)
    batch, tq, kv_heads, groups, d = ops.shape(query)
    heads = kv_heads * groups
    key, value = problem.key, problem.value  # (B, Tv, Hkv, D)

    simple_causal = (
        problem.causal is not None
        and problem.window is None
        and problem.mask is None
        and problem.bias is None
        and (
            problem.causal == "top_left"
            # Equal only if known: traced with unknown lengths, bottom-right
            # alignment needs the explicit position mask.
            or (problem.query_length is not None and problem.query_length == problem.key_length)
        )
    )
    if (
        keras.backend.backend() == "tensorflow"
        and simple_causal
        and problem.query_length is not None
        and problem.key_length is not None
    ):
        # keras' kernel computes the masked half too (docs/BENCHMARKS.md).
        from attnkit.ops import _backend_kernels

        return _backend_kernels.tf_causal_blocks(query, key, value, scale)
    query = ops.reshape(query, (batch, tq, heads, d))  # (B, Tq, H, D)
    mask = None
    if not simple_causal:
        position = problem.position_mask()
        if position is not None:
            position = position[None, None, None]  # (1, 1, 1, Tq, Tv)
        mask = combine_masks(problem.mask, position)
    bias = problem.bias
    row_has_key = None
    if mask is not None:
        mask = ops.broadcast_to(
            _heads_layout(mask, heads),
            (
                1 if mask.shape[0] == 1 else batch,
                1 if mask.shape[1] * mask.shape[2] == 1 else heads,
                tq,
                problem.runtime_length("key"),
            ),
        )
        # Fully masked rows would be NaN (or uniform) in most kernels: open them
        # to every key, then zero their output below.
        row_has_key = ops.any(mask, axis=-1, keepdims=True)  # (B, H, Tq, 1)
        mask = ops.logical_or(mask, ops.logical_not(row_has_key))
    if bias is not None:
        bias = ops.cast(_heads_layout(bias, heads), query.dtype)
        if mask is not None:
            bias = bias + ops.where(mask, 0.0, large_negative(query.dtype))
            mask = None
    if keras.backend.backend() == "torch":
        # keras' torch path repeats K/V for grouped-query heads; SDPA's
        # enable_gqa shares them (docs/BENCHMARKS.md).
        from attnkit.ops import _backend_kernels

        out = _backend_kernels.torch_sdpa(
            query,
            key,
            value,
            mask=bias if bias is not None else mask,
            is_causal=simple_causal,
            scale=scale,
        )  # (B, Tq, H, Dv)
    else:
        if keras.backend.backend() == "tensorflow" and groups > 1:
            # keras' TensorFlow kernel has no grouped-query heads.
            key = ops.repeat(key, groups, axis=2)  # (B, Tv, H, D)
            value = ops.repeat(value, groups, axis=2)
        dv, d = value.shape[-1], query.shape[-1]
        if keras.backend.backend() == "jax" and dv != d:
            # jax.nn.dot_product_attention requires the value head size to equal
            # the key's: pad values with zero features and drop them after.
            if dv < d:
                value = ops.pad(value, [(0, 0), (0, 0), (0, 0), (0, d - dv)])
            else:
                pad = [(0, 0), (0, 0), (0, 0), (0, dv - d)]
                query, key = ops.pad(query, pad), ops.pad(key, pad)
        out = ops.dot_product_attention(
            query,
            key,
            value,
            bias=bias,
            mask=mask,
            scale=scale,
            is_causal=simple_causal,
        )
        out = out[..., : problem.value.shape[-1]]  # (B, Tq, H, Dv)
    if row_has_key is not None:
        keep = ops.transpose(ops.cast(row_has_key, out.dtype), (0, 2, 1, 3))  # (B, Tq, H, 1)
        out = out * keep
    return ops.reshape(out, (batch, tq, kv_heads, groups, problem.value.shape[-1]))


def _heads_layout(x, heads):
    """(B, Hkv|1, G|1, Tq, Tv) -> (B, H|1, Tq, Tv)."""
    shape = ops.shape(x)
    merged = 1 if x.shape[1] * x.shape[2] == 1 else heads
    return ops.reshape(x, (shape[0], merged, shape[3], shape[4]))
