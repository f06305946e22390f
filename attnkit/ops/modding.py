"""Calling ``score_mod`` and ``mask_mod`` on a block of the logits.

The convention (FlexAttention's, Dong et al. 2024, in Keras' layout): both
functions are written with ``keras.ops`` and see four int32 index tensors
broadcastable to the block of logits ``(B, H, q, k)``:

    batch (B, 1, 1, 1), head (1, H, 1, 1), q_idx (1, 1, q, 1), kv_idx (1, 1, 1, k)

``head`` is the global query head ``h`` in ``[0, H)``; grouped heads are laid
out as in Keras' ``GroupQueryAttention`` (query head ``h`` reads key/value head
``h // (H // Hkv)``). ``q_idx`` counts query positions in the keys'
coordinates, ``i + offset`` with the offset of ``alignment`` (bottom-right by
default: ``i + Tv - Tq``, the placement ``causal=True`` uses), so a mod written
for a whole sequence also serves a query step at the end of a key/value cache.

    score_mod(score, batch, head, q_idx, kv_idx, *score_mod_params) -> score
    mask_mod(batch, head, q_idx, kv_idx) -> bool, True = may attend

``score`` is float32 (float64 for float64 inputs) and already scaled; the
result must have its shape and a floating dtype. The core works in its grouped
layout (B, Hkv, G, q, k); the head-major reshape to (B, H, q, k) is free.
Blocks of the chunked path are padded to whole block sizes: the indices of
padded rows and columns are clamped to the last real query and key, so a mod
may index a table of length Tq or Tv with them (the padding is masked).
"""

from __future__ import annotations

import keras
from keras import ops


def _static(dim):
    return dim if isinstance(dim, int) else None


def indices(batch, heads, q_pos, kv_pos):
    """The four index tensors from ``q_pos`` (q,) and ``kv_pos`` (k,) int32."""
    b = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1))  # (B, 1, 1, 1)
    h = ops.reshape(ops.arange(heads, dtype="int32"), (1, -1, 1, 1))  # (1, H, 1, 1)
    q = ops.reshape(ops.cast(q_pos, "int32"), (1, 1, -1, 1))  # (1, 1, q, 1)
    kv = ops.reshape(ops.cast(kv_pos, "int32"), (1, 1, 1, -1))  # (1, 1, 1, k)
    return b, h, q, kv


def block_indices(batch, heads, q_start, q_len, k_start, k_len, *, offset, tq, tv):
    """Indices of the block of queries ``q_start + [0, q_len)`` (counted from
    0, before the offset) and keys ``k_start + [0, k_len)``, padding clamped."""
    q_pos = ops.minimum(ops.arange(q_len, dtype="int32") + q_start, tq - 1) + offset
    kv_pos = ops.minimum(ops.arange(k_len, dtype="int32") + k_start, tv - 1)
    return indices(batch, heads, q_pos, kv_pos)


def _to_heads(x):
    """(B, Hkv, G, q, k) -> (B, H, q, k)."""
    b, hkv, g, q, k = ops.shape(x)
    return ops.reshape(x, (b, hkv * g, q, k))


def _check_tensor(out, name, what):
    """A ValueError naming ``name`` unless ``out`` is a tensor (has a shape and a dtype)."""
    if not (hasattr(out, "shape") and hasattr(out, "dtype")) or isinstance(out, (bool, int, float)):
        raise ValueError(f"`{name}` must return {what}. Received: {name} returned {out!r:.100}")


def apply_score_mod(score_mod, scores, idx, params=()):
    """``score_mod`` on grouped logits (B, Hkv, G, q, k); returns the same layout."""
    dtype = keras.backend.standardize_dtype(scores.dtype)
    flat = _to_heads(scores)  # (B, H, q, k)
    out = score_mod(flat, *idx, *params)
    _check_tensor(out, "score_mod", "a floating-point tensor (the modified scores)")
    out_dtype = keras.backend.standardize_dtype(out.dtype)
    if "float" not in out_dtype:
        raise ValueError(
            "`score_mod` must return a floating-point tensor (the modified scores). "
            f"Received: score_mod returned dtype {out_dtype}"
        )
    got, want = tuple(out.shape), tuple(flat.shape)
    if len(got) != len(want) or any(
        _static(g) is not None and _static(w) is not None and g != w
        for g, w in zip(got, want, strict=True)
    ):
        raise ValueError(
            f"`score_mod` must return scores of the shape it receives, {want}. "
            f"Received: score_mod returned shape {got}"
        )
    return ops.reshape(ops.cast(out, dtype), ops.shape(scores))


def evaluate_mask_mod(mask_mod, idx, heads, groups):
    """``mask_mod`` at ``idx`` -> bool (B|1, Hkv|1, G|1, q|1, k|1)."""
    out = mask_mod(*idx)
    _check_tensor(out, "mask_mod", "a boolean tensor (True = may attend)")
    dtype = keras.backend.standardize_dtype(out.dtype)
    if dtype != "bool":
        raise ValueError(
            "`mask_mod` must return a boolean tensor (True = may attend). "
            f"Received: mask_mod returned dtype {dtype}"
        )
    shape = tuple(out.shape)
    if len(shape) != 4 or _static(shape[1]) not in (1, heads, None):
        raise ValueError(
            "`mask_mod` must return a rank-4 boolean tensor broadcastable to "
            f"(B, H, q, k) with H={heads}. Received: mask_mod returned shape {shape}"
        )
    if shape[1] == 1:
        return out[:, :, None]  # (B|1, 1, 1, q|1, k|1)
    dyn = ops.shape(out)
    return ops.reshape(out, (dyn[0], heads // groups, groups, dyn[2], dyn[3]))


def score_mod_params(params, score_mod):
    """``score_mod_params`` validated: a tuple of floating-point tensors, each
    variable read into a tensor.

    Reading matters on TensorFlow: a ``keras.Variable`` (or ``tf.Variable``)
    handed on as such reaches the chunked path's ``tf.custom_gradient``, which
    then refuses a function that "uses variables" (its gradient function
    would have to return their gradients separately). The read
    (``ops.cast`` to the variable's own dtype) is recorded by an enclosing
    ``tf.GradientTape`` like any op, so the variable still gets its gradient;
    on JAX and torch it returns the same array. Every caller of the core gets
    this, not only the layers.
    """
    if not isinstance(params, (tuple, list)):
        raise ValueError(
            "`score_mod_params` must be a tuple of tensors. "
            f"Received: score_mod_params={params!r:.200}"
        )
    if params and score_mod is None:
        raise ValueError(
            "`score_mod_params` are passed to a `score_mod`; none was given. "
            f"Received: score_mod=None, score_mod_params of length {len(params)}"
        )
    return tuple(float_tensor(x, f"score_mod_params[{i}]") for i, x in enumerate(params))


def float_tensor(x, name):
    """``x`` as a floating-point tensor (a variable read), or a ValueError naming it."""
    if x is None:
        raise ValueError(f"`{name}` must be a floating-point tensor. Received: {name}=None")
    try:
        tensor = ops.convert_to_tensor(x)
    except (TypeError, ValueError) as error:  # each backend words it differently
        raise ValueError(
            f"`{name}` must be a floating-point tensor. Received: {name}={x!r:.200}"
        ) from error
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    if "float" not in dtype:
        raise ValueError(
            f"`{name}` must be a floating-point tensor. Received: {name}.dtype={dtype}"
        )
    return ops.cast(tensor, dtype)  # a variable's value as a tensor; a tensor unchanged


def check_sizes(fn, name, batch, query_length, key_length):
    """Raises ValueError where a mod built for other sizes meets these inputs.

    A mod that holds per-position data (``mods.document_mask``'s segment ids,
    ``mods.prefix_lm``'s lengths per example) records what it holds in
    ``fn.expected_sizes``: ``(argument, shape, axes)`` records, ``axes``
    naming for each checked axis of ``shape`` the size it must equal
    (``"batch"``, 1 also accepted; ``"query"``; ``"key"``). Unknown (traced)
    sizes are not checked.
    """
    sizes = {"batch": batch, "query": query_length, "key": key_length}
    symbols = {"batch": "B", "query": "Tq", "key": "Tv"}
    for argument, shape, axes in getattr(fn, "expected_sizes", ()):
        want = tuple(sizes[axes[i]] if i in axes else dim for i, dim in enumerate(shape))
        if any(
            isinstance(shape[i], int)
            and isinstance(sizes[axis], int)
            and shape[i] != sizes[axis]
            and not (axis == "batch" and shape[i] == 1)
            for i, axis in axes.items()
        ):
            spelled = ", ".join(symbols.get(axes.get(i), "_") for i in range(len(shape)))
            raise ValueError(
                f"`{argument}` of the {name} must have shape ({spelled}) = {want} for these "
                f"inputs (a batch of 1 is shared by every example). "
                f"Received: {argument}.shape={tuple(shape)}"
            )
