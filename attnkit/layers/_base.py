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
