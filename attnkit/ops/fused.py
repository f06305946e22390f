"""The backend's own kernel (``backend.fused_attention``: torch SDPA, keras'
``dot_product_attention``, blocked causal on TensorFlow), with attnkit's masks
and, for a score_mod marked additive (``mods.is_additive``: ALiBi, the T5
bias), that mod's bias materialised as a (1, H, Tq, Tv) tensor."""

from __future__ import annotations

from keras import ops

from attnkit.ops import backend, modding
from attnkit.ops.masks import combine_masks, large_negative

# The last additive mod's bias without parameters (ALiBi), kept for the next
# call with the same mod and sizes: a layer calls its mod object with the same
# length step after step, and the bias is a constant of (mod, H, Tq, Tv,
# alignment, dtype). One entry, so at most one bias (within dispatch's
# MATERIALISED_BIAS_MAX) is held; mods with parameters (a learned T5 table)
# are rebuilt on every call.
_BIAS_CACHE: dict = {}


def mod_bias(problem, dtype):
    """The additive score_mod's bias in the grouped layout (1, Hkv, G, Tq, Tv)."""
    tq, tv = problem.runtime_length("query"), problem.runtime_length("key")
    kv_heads = problem.num_kv_heads
    groups = problem.num_heads // kv_heads
    key = None
    if not problem.score_mod_params and not _is_traced(problem.query):
        key = (
            problem.score_mod,
            problem.num_heads,
            kv_heads,
            tq,
            tv,
            problem.offset,
            str(dtype),
            str(getattr(problem.query, "device", "")),
        )
        cached = _BIAS_CACHE.get("bias")
        if cached is not None and cached[0] == key:
            return cached[1]
    idx = modding.block_indices(
        1, problem.num_heads, 0, tq, 0, tv, offset=problem.offset, tq=tq, tv=tv
    )
    zeros = ops.zeros((1, kv_heads, groups, tq, tv), dtype=dtype)
    bias = modding.apply_score_mod(problem.score_mod, zeros, idx, problem.score_mod_params)
    if key is not None:
        _BIAS_CACHE["bias"] = (key, bias)
    return bias


def _is_traced(x):
    """True for a symbolic tensor (jit, tf.function): nothing is cached then."""
    try:
        ops.convert_to_numpy(x[(0,) * len(x.shape)])
    except Exception:  # each backend's tracer raises its own type
        return True
    return False


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
        and problem.score_mod is None  # its bias takes the causal mask (SDPA refuses both)
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
    if problem.score_mod is not None:  # additive (dispatch.fused_supports checked it)
        from attnkit.ops.softmax import softmax_dtype

        extra = mod_bias(problem, softmax_dtype(query.dtype))
        bias = extra if bias is None else ops.cast(bias, extra.dtype) + extra
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
