"""Input checks shared by the plotting helpers."""

from __future__ import annotations

import numpy as np


def to_numpy(x, name: str) -> np.ndarray:
    """Converts an array, a nested list or a backend tensor to a float ndarray."""
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        arr = np.asarray(x)
    else:
        import keras

        arr = keras.ops.convert_to_numpy(x)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"Expected `{name}` to hold numbers. Received: {name}.dtype={arr.dtype}")
    arr = arr.astype("float64")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"Expected `{name}` to be finite; it holds NaN or inf. Received: {name}={arr!r}"
        )
    return arr


def check_labels(labels, length: int, name: str, axis: str):
    if labels is None:
        return None
    labels = [str(label) for label in labels]
    if len(labels) != length:
        raise ValueError(
            f"Expected one entry of `{name}` per {axis} ({length}). "
            f"Received: len({name})={len(labels)}"
        )
    return labels


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    return int(value)
