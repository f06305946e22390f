"""Raffel & Ellis (2015)'s addition and multiplication problems, and their model.

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
``keras.layers.Masking(0.0)`` recovers the padding; the model below uses it.
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


def build_addition_model(
    units=100, *, negative_slope=0.01, learning_rate=1e-2, compile=True, seed=None
):
    """The feed-forward attention model of Raffel & Ellis 2015.

    ``h_t = LReLU(W x_t + b)`` (``units`` wide), feed-forward attention pooling
    ``c = Σ_t softmax_t(tanh(w h_t + b)) h_t`` over the unpadded steps, then
    two LReLU dense layers (``units`` and 1 wide). With ``units=100`` it has
    the paper's 10,602 parameters. Input ``(B, T, 2)`` of any T; output
    ``(B, 1)``.

    Training follows the paper and the authors' code (craffel/ff-attention):
    zero biases, a leaky ReLU of slope 0.01 on every layer (the output too),
    Adam (β1 = 0.9, β2 = 0.999, ε = 1e-8) on the mean squared error, no
    gradient clipping. The paper picks the learning rate per task from
    {0.01, 0.003, 0.001, 0.0003}; 0.01 is the one that solves the addition
    problem at T0 = 1000 in one epoch (at 0.001 the model stalls near 90% of
    the test sequences). The kernels are Glorot uniform, the attention
    vector ``w`` included: the authors' He normal kernels (``N(0, 2 / fan_in)``,
    so ``N(0, 1)`` on the 2 inputs) make training at 0.01 erratic here.

    Args:
        units: D, the width of ``h_t`` and of the hidden dense layer.
            Defaults to `100`.
        negative_slope: the LReLU slope (Lasagne's default). Defaults to `0.01`.
        learning_rate: Adam's learning rate. Defaults to `1e-2`.
        compile: compile with Adam and the mean squared error.
            Defaults to `True`.
        seed: seed of the initializers. Defaults to `None`.
    """
    import keras

    from attnkit.layers.attention_pooling import AttentionPooling

    def init(offset):
        return keras.initializers.GlorotUniform(None if seed is None else seed + offset)

    inputs = keras.Input((None, 2), name="sequence")
    x = keras.layers.Masking(0.0, name="padding")(inputs)
    x = keras.layers.Dense(units, kernel_initializer=init(0), name="embed")(x)
    x = keras.layers.LeakyReLU(negative_slope, name="embed_lrelu")(x)
    x = AttentionPooling(score="feedforward", kernel_initializer=init(1), name="attention")(x)
    x = keras.layers.Dense(units, kernel_initializer=init(2), name="hidden")(x)
    x = keras.layers.LeakyReLU(negative_slope, name="hidden_lrelu")(x)
    x = keras.layers.Dense(1, kernel_initializer=init(3), name="output")(x)
    outputs = keras.layers.LeakyReLU(negative_slope, name="output_lrelu")(x)
    model = keras.Model(inputs, outputs, name="raffel_ellis_attention")
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
            loss="mse",
        )
    return model
