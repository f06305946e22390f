"""The backend's own kernel, through ``keras.ops.dot_product_attention``."""

from __future__ import annotations

import keras
from keras import ops

from attnkit.ops.masks import combine_masks, large_negative, position_mask
from attnkit.ops.softmax import softmax_dtype


def attend(problem):
    """Returns the output (B, Tq, Hkv, G, Dv)."""
    # The kernels scale the scores themselves (cheaper than scaling q first:
    # a separate multiply cost 7 ms of 29 at N=1024 on torch).
    query = problem.query
    scale = 1.0 if problem.scale is None else float(problem.scale)
    batch, tq, kv_heads, groups, d = ops.shape(query)
    heads = kv_heads * groups
    query = ops.reshape(query, (batch, tq, heads, d))  # (B, Tq, H, D)
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
        if (
            keras.backend.backend() == "tensorflow"
            and simple_causal
            and problem.query_length is not None
            and problem.key_length is not None
        ):
            out = _causal_in_query_blocks(query, key, value, problem.key_length, scale)
        else:
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


# Causal attention through a materialising kernel computes and then discards
# the masked half of the scores. Split into query blocks, block i needs only
# the keys up to its last row: sum_i (i + 1) / n^2 = 0.53 of the work at
# n = 16, and 1/16 of the score memory. Only the block's last (rows x rows)
# square straddles the diagonal; the keys left of it are all visible, so the
# mask is applied to that square alone and the two score parts are joined for
# one softmax. Written with matmuls in the (B, H, T, D) layout rather than
# through keras' kernel, which masks the whole block (ones_like, logical_and,
# where: three passes over the scores) and scales the scores instead of q.
# Measured on TensorFlow, forward, B=1, H=8, D=64, one process, alternating
# calls (docs/BENCHMARKS.md): 8 blocks through keras' kernel 0.76-0.77x of
# non-causal; this form 0.64x at 8 blocks, 0.60-0.62x at 16, no better at 32
# or with 128-row blocks (64-row blocks: 0.72x).
CAUSAL_QUERY_BLOCKS = 16
CAUSAL_MIN_BLOCK_ROWS = 256


def _causal_in_query_blocks(query, key, value, key_length, scale):
    """Top-left causal attention (B, Tq, H, D) -> (B, Tq, H, Dv), blocked over queries.

    Row r sees keys 0..r (every key once r >= Tv). Each block's rows see
    their whole key prefix, so every block is an exact softmax on its own.
    """
    # Logits and softmax in at least float32, as keras' kernel does.
    logits_dtype = softmax_dtype(query.dtype)
    q = ops.transpose(query, (0, 2, 1, 3)) * ops.cast(scale, query.dtype)  # (B, H, Tq, D)
    k_t = ops.transpose(key, (0, 2, 3, 1))  # (B, H, D, Tv)
    v = ops.transpose(value, (0, 2, 1, 3))  # (B, H, Tv, Dv)
    tq = query.shape[1]
    size = max(CAUSAL_MIN_BLOCK_ROWS, -(-tq // CAUSAL_QUERY_BLOCKS))
    outs = []
    for start in range(0, tq, size):
        stop = min(start + size, tq)
        left = min(start, key_length)  # keys every row of the block sees
        visible = min(stop, key_length)  # keys 0 .. visible - 1 seen by some row
        q_block = q[:, :, start:stop]
        parts = []
        if left > 0:
            parts.append(ops.cast(ops.matmul(q_block, k_t[..., :left]), logits_dtype))
        if visible > left:
            square = ops.cast(ops.matmul(q_block, k_t[..., left:visible]), logits_dtype)
            seen = position_mask(
                ops.arange(start, stop)[:, None],
                ops.arange(left, visible)[None, :],
                causal="top_left",
                window=None,
            )[None, None]  # (1, 1, rows, keys)
            parts.append(ops.where(seen, square, large_negative(logits_dtype)))
        scores = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        if visible == 1:
            # Every row sees key 0 alone: softmax is exp(s - s) = 1 (keras warns
            # on a size-1 softmax); kept a function of s so gradients stay connected.
            probs = ops.cast(ops.exp(scores - scores), value.dtype)
        else:
            probs = ops.cast(ops.softmax(scores, axis=-1), value.dtype)
        outs.append(ops.matmul(probs, v[:, :, :visible]))  # (B, H, rows, Dv)
    out = outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=2)
    return ops.transpose(out, (0, 2, 1, 3))


def _heads_layout(x, heads):
    """(B, Hkv|1, G|1, Tq, Tv) -> (B, H|1, Tq, Tv)."""
    shape = ops.shape(x)
    merged = 1 if x.shape[1] * x.shape[2] == 1 else heads
    return ops.reshape(x, (shape[0], merged, shape[3], shape[4]))
