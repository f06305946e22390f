"""Boolean attention masks. Convention everywhere: True = may attend.

Shape legend (used throughout attnkit): B batch, Tq query length, Tv key/value
length, H query heads, Hkv key/value heads, D head dim.

Causal alignment when Tq != Tv
------------------------------
``"bottom_right"`` (the default, what ``causal=True`` means): query ``i`` sits at
absolute position ``i + (Tv - Tq)``, i.e. the queries are the *last* Tq positions
of the key sequence. A one-step query at the end of a key/value cache therefore
sees the whole cache, and a prefix-less self-attention (Tq == Tv) is the usual
lower triangle. ``"top_left"``: query ``i`` sits at position ``i`` (the
``keras.layers.Attention(use_causal_mask=True)`` convention, ``tril(ones(Tq, Tv))``).
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

CAUSAL_ALIGNMENTS = ("bottom_right", "top_left")


def normalize_causal(causal) -> str | None:
    """Maps the public ``causal`` argument to an alignment name or None."""
    if causal is None or causal is False:
        return None
    if causal is True:
        return "bottom_right"
    if isinstance(causal, str) and causal in CAUSAL_ALIGNMENTS:
        return causal
    raise ValueError(
        f"`causal` must be a bool or one of {CAUSAL_ALIGNMENTS}. Received: causal={causal!r}"
    )


def validate_alignment(alignment) -> str:
    if not isinstance(alignment, str) or alignment not in CAUSAL_ALIGNMENTS:
        raise ValueError(
            f"`alignment` must be one of {CAUSAL_ALIGNMENTS}. Received: alignment={alignment!r}"
        )
    return alignment


def causal_arguments(causal, alignment="bottom_right"):
    """``(causal: bool, alignment)`` from the public ``causal`` and ``alignment``.

    An alignment name given as ``causal`` (the form before ``alignment``
    existed) still works for now, with a DeprecationWarning.
    """
    alignment = validate_alignment(alignment)
    if isinstance(causal, str):
        name = normalize_causal(causal)
        warnings.warn(
            f"causal={causal!r} is deprecated; pass causal=True, alignment={name!r}.",
            DeprecationWarning,
            stacklevel=4,  # the caller of attention() / attention_weights()
        )
        return True, name
    if causal is None or isinstance(causal, bool):
        return bool(causal), alignment
    raise ValueError(f"`causal` must be a bool. Received: causal={causal!r}")


def validate_window(window) -> int | None:
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(
            "`window` must be a positive integer (a key j is visible from query "
            f"i when |i - j| < window). Received: window={window!r}"
        )
    return window


def query_offset(tq: int, tv: int, alignment: str | None) -> int:
    """Absolute position of query 0 on the key axis for an alignment."""
    if alignment == "top_left":
        return 0
    return tv - tq


def position_mask(q_pos, k_pos, *, causal: str | None, window: int | None):
    """Mask from absolute positions; q_pos (..., Tq, 1), k_pos (..., 1, Tv).

    Returns None when neither ``causal`` nor ``window`` constrains anything.
    """
    mask = None
    if causal is not None:
        mask = k_pos <= q_pos
    if window is not None:
        # |i - j| < w, or 0 <= i - j < w together with causal.
        near = ops.abs(q_pos - k_pos) < window
        mask = near if mask is None else ops.logical_and(mask, near)
    return mask


def aligned_mask(query_length, key_length, *, causal=False, window=None, alignment="bottom_right"):
    """The ``(Tq, Tv)`` causal/window mask of these lengths, or None if neither is set.

    Lengths are ints or run-time scalars; ``alignment`` places the queries on the
    key axis (module docstring). The one builder behind ``causal_mask``,
    ``sliding_window_mask`` and the layers' top-left masks.
    """
    if not causal and window is None:
        return None
    offset = query_offset(query_length, key_length, alignment)
    q_pos = ops.expand_dims(ops.arange(query_length, dtype="int32") + offset, -1)  # (Tq, 1)
    k_pos = ops.expand_dims(ops.arange(key_length, dtype="int32"), 0)  # (1, Tv)
    return position_mask(q_pos, k_pos, causal=alignment if causal else None, window=window)


def causal_mask(
    query_length: int, key_length: int | None = None, *, alignment: str | None = "bottom_right"
) -> Any:
    """Lower-triangular ``(Tq, Tv)`` mask; see the module docstring for alignment."""
    key_length = query_length if key_length is None else key_length
    alignment = normalize_causal(True if alignment is None else alignment)
    return aligned_mask(query_length, key_length, causal=True, alignment=alignment)


def sliding_window_mask(
    query_length: int,
    key_length: int | None = None,
    window: int | None = 1,
    *,
    causal: bool = False,
    alignment: str | None = "bottom_right",
) -> Any:
    """``(Tq, Tv)`` mask with ``|i - j| < window`` (and ``j <= i`` when ``causal``).

    Query positions are aligned to key positions as for ``causal_mask``.
    """
    key_length = query_length if key_length is None else key_length
    window = validate_window(window)
    alignment = normalize_causal(True if alignment is None else alignment)
    return aligned_mask(
        query_length, key_length, causal=bool(causal), window=window, alignment=alignment
    )


def padding_mask(lengths_or_mask: Any, max_length: int | None = None) -> Any:
    """``(B, T)`` boolean mask from lengths ``(B,)`` or from a ``(B, T)`` mask.

    Lengths need ``max_length``. A ``(B, T)`` input is returned as booleans.
    """
    x = ops.convert_to_tensor(lengths_or_mask)
    if len(x.shape) == 2:
        return ops.cast(x, "bool")
    if len(x.shape) != 1:
        raise ValueError(
            "`lengths_or_mask` must be lengths of shape (B,) or a mask of shape "
            f"(B, T). Received: lengths_or_mask.shape={tuple(x.shape)}"
        )
    if max_length is None:
        raise ValueError(
            "`max_length` is required when `lengths_or_mask` holds lengths. "
            "Received: max_length=None"
        )
    positions = ops.arange(max_length, dtype="int32")[None, :]
    return positions < ops.cast(x, "int32")[:, None]


def combine_masks(*masks: Any) -> Any:
    """AND of all masks that are not None (broadcasting); None if all are None."""
    result = None
    for mask in masks:
        if mask is None:
            continue
        mask = ops.cast(mask, "bool")
        result = mask if result is None else ops.logical_and(result, mask)
    return result


def large_negative(dtype) -> float:
    """A finite very negative logit that survives ``dtype`` (float16 included)."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "float16":
        return -3e4
    if dtype == "bfloat16":
        return -1e30
    return -1e30 if dtype == "float32" else -1e300
