"""The backend's own kernel (``backend.fused_attention``: torch SDPA, keras'
``dot_product_attention``, blocked causal on TensorFlow), with attnkit's masks."""

from __future__ import annotations

from keras import ops

from attnkit.ops import backend
from attnkit.ops.masks import combine_masks, large_negative


def attend(problem):
    """Returns the output (B, Tq, Hkv, G, Dv)."""
    # The kernels scale the scores themselves (cheaper than scaling q first:
    # a separate multiply cost 7 ms of 29 at N=1024 on torch).
    query = problem.query
    scale = 1.0 if problem.scale is None else float(problem.scale)
    batch, tq, kv_heads, groups, _ = ops.shape(query)
    heads = kv_heads * groups

    simple_causal = (
        problem.causal is not None
        and problem.window is None
        and problem.mask is None
        and problem.bias is None
        and (
            problem.alignment == "top_left"
            # Equal only if known: traced with unknown lengths, bottom-right
            # alignment needs the explicit position mask.
            or (problem.query_length is not None and problem.query_length == problem.key_length)
        )
    )
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
    out = backend.fused_attention(
        query, problem.key, problem.value, mask=mask, bias=bias, causal=simple_causal, scale=scale
    )  # (B, Tq, Hkv, G, Dv)
    if row_has_key is not None:
        dv = out.shape[-1]
        keep = ops.transpose(ops.cast(row_has_key, out.dtype), (0, 2, 1, 3))  # (B, Tq, H, 1)
        out = ops.reshape(out, (batch, tq, heads, dv)) * keep  # (B, Tq, H, Dv)
        out = ops.reshape(out, (batch, tq, kv_heads, groups, dv))
    return out


def _heads_layout(x, heads):
    """(B, Hkv|1, G|1, Tq, Tv) -> (B, H|1, Tq, Tv)."""
    shape = ops.shape(x)
    merged = 1 if x.shape[1] * x.shape[2] == 1 else heads
    return ops.reshape(x, (shape[0], merged, shape[3], shape[4]))
