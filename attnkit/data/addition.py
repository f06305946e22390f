"""Raffel & Ellis (2015)'s addition and multiplication problems.

Each sequence is a series of (value, marker) pairs (arXiv:1512.08756, after
Hochreiter & Schmidhuber 1997 and the generator of craffel/lstm_problems):

- the length is drawn uniformly from ``[T0, ceil(1.1 T0)]`` (both ends
  included) and the sequence is zero-padded to ``ceil(1.1 T0)`` steps;
- markers are -1 at the first and the last step, 1 at step ``N1 ∈ [1, 9]``
  and at step ``N2 ∈ [1, T/2 - 2]`` (``N2`` moves one step on when it equals
  ``N1``), 0 elsewhere and on the padding;
- addition: values ``U[-1, 1]``, target ``0.5 + (X1 + X2) / 4``;
  multiplication: values ``U[0, 1]``, target ``X1 · X2``.

A real step is never exactly (0, 0) (its value is continuous), so
``keras.layers.Masking(0.0)`` recovers the padding; the paper's model
(``attnkit.models.addition_model``) uses it.
"""

from __future__ import annotations

import math

import numpy as np

TASKS = ("addition", "multiplication")
TOLERANCE = 0.04  # the paper's criterion: a sequence is solved when |error| < 0.04


def max_length(min_length: int) -> int:
    """The padded length ``ceil(1.1 T0)``."""
    return math.ceil(1.1 * min_length)


def generate(n, min_length, *, task="addition", seed=None):
    """``n`` sequences of at least ``min_length`` steps and their targets.

    Args:
        n: number of sequences.
        min_length: T0; lengths are uniform in ``[T0, ceil(1.1 T0)]``. At
            least 11, so that ``N1 <= 9`` falls before the last step.
        task: ``"addition"`` or ``"multiplication"``.
        seed: int or ``np.random.Generator``; the same seed gives the same
            data.

    Returns:
        ``(x, y)``: ``x`` float32 ``(n, ceil(1.1 T0), 2)`` (value, marker),
        zero-padded; ``y`` float32 ``(n, 1)``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be a positive integer. Received: n={n!r}")
    if (
        isinstance(min_length, bool)
        or not isinstance(min_length, (int, np.integer))
        or min_length < 11
    ):
        raise ValueError(
            "`min_length` must be an integer >= 11 (the first marked step is "
            f"drawn from [1, 9], before the last step). Received: min_length={min_length!r}"
        )
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}. Received: task={task!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    width = max_length(int(min_length))
    lengths = rng.integers(min_length, width, size=n, endpoint=True)
    low = -1.0 if task == "addition" else 0.0
    values = rng.uniform(low, 1.0, size=(n, width))
    steps = np.arange(width)[None, :]
    values = np.where(steps < lengths[:, None], values, 0.0)
    markers = np.zeros((n, width))
    rows = np.arange(n)
    first = rng.integers(1, 9, size=n, endpoint=True)  # N1 in [1, 9]
    # N2 in [1, T/2 - 2]: craffel's randint(1, T/2 - 1), high excluded.
    second = rng.integers(1, lengths // 2 - 1)
    second = np.where(second == first, second + 1, second)
    markers[rows, 0] = -1.0
    markers[rows, lengths - 1] = -1.0
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x1, x2 = values[rows, first], values[rows, second]
    y = 0.5 + (x1 + x2) / 4.0 if task == "addition" else x1 * x2
    x = np.stack([values, markers], axis=-1).astype("float32")
    return x, y.astype("float32")[:, None]
