"""Mask and argument helpers shared by the Keras-compatible attention layers.

Shape legend: B batch, Tq query length, Tv key/value length, H heads.

Every layer here aligns positions the Keras way ("top-left"): query ``i`` sits
at position ``i`` of the key sequence, whatever Tq and Tv are. That is what
``keras.layers.Attention(use_causal_mask=True)`` and the ``sliding_window`` of
``keras.layers.MultiHeadAttention`` compute.
"""

from __future__ import annotations

from keras import ops

from attnkit.ops import masks as masks_lib


def padding_mask(query_mask, key_masks, heads_axis=False):
    """AND of a query mask (B, Tq) and key masks (B, Tv) as (B, [1,] Tq, Tv).

    With ``heads_axis`` a singleton head axis follows the batch axis (the 4-D
    layout). Returns None when every mask is None.
    """
    pad = (None,) if heads_axis else ()
    result = []
    if query_mask is not None:
        query_mask = ops.cast(query_mask, "bool")
        result.append(query_mask[(slice(None),) + pad + (slice(None), None)])  # (B, .., Tq, 1)
    for mask in key_masks:
        if mask is not None:
            mask = ops.cast(mask, "bool")
            result.append(mask[(slice(None),) + pad + (None, slice(None))])  # (B, .., 1, Tv)
    return masks_lib.combine_masks(*result)


def _static_shape(x):
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = ops.shape(ops.convert_to_tensor(x))
    # A symbolic size (a JAX trace's batch, a TensorFlow None) counts as unknown.
    return tuple(d if isinstance(d, int) else None for d in shape)


def check_mask(mask, name, expected, legend):
    """A ``ValueError`` naming ``name`` unless ``mask`` is None or has shape ``expected``.

    ``expected`` is the shape it must have (None = any size), ``legend`` its
    symbolic form, e.g. ``"(B, Tv)"``: a padding mask has its input's shape
    without the feature axis.
    """
    if mask is None:
        return
    shape = _static_shape(mask)
    expected = tuple(expected)
    if len(shape) != len(expected) or any(
        e is not None and s is not None and e != s for e, s in zip(expected, shape, strict=False)
    ):
        raise ValueError(
            f"`{name}` must have shape {legend} = {expected}. Received: {name}.shape={shape}"
        )


def check_attention_mask(mask, name, batch, heads, query_length, key_length):
    """A ``ValueError`` naming ``name`` unless ``mask`` broadcasts to (B, [H,] Tq, Tv).

    Accepted ranks are 2 (Tq, Tv), 3 (B, Tq, Tv) and 4 (B, H, Tq, Tv); each
    axis has its size or 1.
    """
    if mask is None:
        return
    shape = _static_shape(mask)
    full = {2: (query_length, key_length), 3: (batch, query_length, key_length)}
    full[4] = (batch, heads, query_length, key_length)
    expected = full.get(len(shape))
    if expected is None or any(
        e is not None and s is not None and s not in (1, e)
        for e, s in zip(expected, shape, strict=True)
    ):
        raise ValueError(
            f"`{name}` must be broadcastable to (B, [H,] Tq, Tv) = "
            f"({batch}, [{heads},] {query_length}, {key_length}). "
            f"Received: {name}.shape={shape}"
        )
