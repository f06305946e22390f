"""The key/value cache of multi-head attention, as pure functions.

A cache holds the projected keys and values of S positions, shape
``(B, 2, S, Hkv, D)`` (keras-hub's layout). ``update`` writes the new tokens'
keys and values at ``index``; the queries then sit at positions
``index, index + 1, ...`` and see the filled positions ``< index + Tnew``
(``positions_mask``).
"""

from __future__ import annotations

from keras import ops


def validate(cache, cache_update_index, *, kv_heads, key_dim, value_dim, standard_layout, axes):
    """ValueErrors for a cache the layer cannot use; None if it can."""
    if cache is None:
        if cache_update_index is not None:
            raise ValueError(
                "`cache_update_index` needs a `cache`. "
                f"Received: cache=None, cache_update_index={cache_update_index!r}"
            )
        return
    if not standard_layout:
        raise ValueError(
            "A key/value cache needs inputs (B, T, D) attended over axis 1. "
            f"Received: attention_axes={axes}"
        )
    if value_dim != key_dim:
        raise ValueError(
            "A key/value cache stacks keys and values and needs value_dim == "
            f"key_dim. Received: key_dim={key_dim}, value_dim={value_dim}"
        )
    expected = (2, None, kv_heads, key_dim)
    shape = tuple(cache.shape)
    if len(shape) != 5 or any(
        e is not None and s is not None and e != s for e, s in zip(expected, shape[1:], strict=True)
    ):
        raise ValueError(
            "`cache` must have shape (B, 2, S, num_key_value_heads, key_dim) = "
            f"(B, 2, S, {kv_heads}, {key_dim}). Received: cache.shape={shape}"
        )
    if isinstance(cache_update_index, bool) or (
        isinstance(cache_update_index, int) and cache_update_index < 0
    ):
        raise ValueError(
            "`cache_update_index` must be a non-negative integer. "
            f"Received: cache_update_index={cache_update_index!r}"
        )


def read(cache):
    """The cached keys and values, each (B, S, Hkv, D)."""
    return cache[:, 0], cache[:, 1]


def update(cache, new_keys, new_values, index):
    """Writes (B, Tnew, Hkv, D) keys and values at ``index``.

    Returns the keys and values (B, S, Hkv, D) and the new cache (B, 2, S, Hkv, D).
    """
    key_cache, value_cache = read(cache)
    start = [0, index, 0, 0]
    key_cache = ops.slice_update(key_cache, start, ops.cast(new_keys, key_cache.dtype))
    value_cache = ops.slice_update(value_cache, start, ops.cast(new_values, value_cache.dtype))
    return key_cache, value_cache, ops.stack([key_cache, value_cache], axis=1)


def place_mask(mask, index, length):
    """A (B, Tnew) mask of the new tokens at their cache positions: (B, S),
    True elsewhere."""
    full = ops.ones((ops.shape(mask)[0], length), dtype="int32")
    full = ops.slice_update(full, [0, index], ops.cast(mask, "int32"))
    return ops.cast(full, "bool")


def positions_mask(index, new_length, tq, tv, *, causal, window):
    """(Tq, S): query i sits at ``index + i`` and sees the filled positions,
    those ``<= index + i`` with ``causal``, within ``window`` of it with a window."""
    q_pos = ops.arange(tq, dtype="int32")[:, None] + index  # (Tq, 1)
    k_pos = ops.arange(tv, dtype="int32")[None, :]  # (1, S)
    mask = k_pos < index + new_length  # only filled positions
    if causal:
        mask = ops.logical_and(mask, k_pos <= q_pos)
    if window is not None:
        mask = ops.logical_and(mask, ops.abs(q_pos - k_pos) < window)
    return mask
