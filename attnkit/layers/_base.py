"""Mask and argument helpers shared by the Keras-compatible attention layers.

Shape legend: B batch, Tq query length, Tv key/value length, H heads.

Every layer here aligns positions the Keras way ("top-left"): query ``i`` sits
at position ``i`` of the key sequence, whatever Tq and Tv are. That is what
``keras.layers.Attention(use_causal_mask=True)`` and the ``sliding_window`` of
``keras.layers.MultiHeadAttention`` compute.
"""

from __future__ import annotations

from keras import ops

from attnkit import _checks
from attnkit.ops import masks as masks_lib


# Kept for the layers until they call attnkit._checks directly.
def check_positive_int(value, name, allow_none=False):
    return _checks.positive_int(value, name, allow_none=allow_none)


def check_rate(value, name="dropout"):
    return _checks.rate(value, name)


def check_bool(value, name):
    return _checks.boolean(value, name)


def position_arguments(query, key, *, causal, window):
    """``(causal, window, mask)`` for ``attnkit.ops.attention``, top-left aligned.

    ``query`` (B, Tq, ...) and ``key`` (B, Tv, ...) give the lengths. The core
    aligns a window without ``causal`` bottom-right; unless Tq == Tv is known
    statically, the window is then given as an explicit (Tq, Tv) mask.
    """
    if causal:
        return "top_left", window, None
    tq, tv = query.shape[1], key.shape[1]
    if window is None or (tq is not None and tq == tv):
        return False, window, None
    tq, tv = ops.shape(query)[1], ops.shape(key)[1]
    q_pos = ops.arange(tq, dtype="int32")[:, None]  # (Tq, 1)
    k_pos = ops.arange(tv, dtype="int32")[None, :]  # (1, Tv)
    mask = masks_lib.position_mask(q_pos, k_pos, causal=None, window=window)
    return False, None, mask  # (Tq, Tv)


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
