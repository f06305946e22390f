"""Monotonic attention (Raffel et al. 2017) as a mechanism for AttentionRNNCell."""

from __future__ import annotations

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers.attention_mechanism import AttentionMechanism, first_position
from attnkit.ops import alignment, counter_noise

SCORES = ("bahdanau", "luong")
MODES = ("parallel", "recursive", "hard")


class _NoiseSeeds(keras.layers.Layer):
    """Draws the per-example noise seeds ``(B, counter_noise.STATE_SIZE)``.

    A layer, so that the draw is a node of a functional model (it runs at
    every call, outside the recurrent loop, where a ``SeedGenerator`` works
    on every backend) and so that its generator's state is tracked.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, template):
        return counter_noise.initial_state(ops.shape(template)[0], self.seed_generator)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], counter_noise.STATE_SIZE)


@keras.saving.register_keras_serializable(package="attnkit")
class MonotonicAttention(AttentionMechanism):
    """Online monotonic attention: the alignment never moves backwards.

    Raffel, Luong, Liu, Weiss, Eck 2017 (https://arxiv.org/abs/1704.00784).
    For a query `s` (B, Dq), memory `h` (B, Tv, Dv) and the previous
    alignment `α_{i−1}` (α_0 = [1, 0, ...]):

    1. energies `e_j`: `"bahdanau"`: `g·vᵀ/|v| tanh(W s + V h_j + b) + r`
       (paper eq. 16; plain `vᵀ tanh(W s + V h_j) + r` without `normalize`);
       `"luong"`: `g · sᵀ W h_j + r` (`g` only with `normalize`). `r` is the
       learned scalar `score_bias`, initialised at `score_bias_init`.
    2. `p_j = sigmoid(e_j + N(0, sigmoid_noise²))`, the noise only in
       training; masked positions get `p_j = 0`.
    3. `"recursive"`/`"parallel"`: the expected alignment
       `α_ij = p_ij q_ij`, `q_ij = (1 − p_{i,j−1}) q_{i,j−1} + α_{i−1,j}`
       (the two modes compute the same quantity; `Σ_j α_ij ≤ 1`, not
       renormalised). `"hard"`: `p_j = 1[e_j > 0]` and `α_i` is one-hot at
       the first `j ≥ t_{i−1}` with `p_j = 1`, or zero (context 0) if none.

    The mode in training is `mode`; at inference it is `inference_mode`
    (e.g. train `"parallel"`, decode `"hard"`, as in the paper).

    Masking: masked memory positions are never chosen; a row with no
    visible position gets zeros, never NaN.

    Args:
        units: width U of the Bahdanau projections (needed for `"bahdanau"`;
            unused by `"luong"`, which projects the memory to the query size).
            Defaults to `None`.
        score: `"bahdanau"` or `"luong"`. Defaults to `"bahdanau"`.
        mode: `"parallel"`, `"recursive"` or `"hard"`. Defaults to `"parallel"`.
        sigmoid_noise: standard deviation of the pre-sigmoid noise in
            training. The noise is fresh at every step and every call; it
            comes from a counter-based generator (`attnkit.ops.counter_noise`)
            whose per-example seeds and step count are an extra recurrent
            state, so it also works inside `keras.layers.RNN`'s traced loop
            on JAX, and a given seed draws the same noise on every backend.
            Defaults to `0.0`.
        score_bias_init: initial value of `r` (negative: the alignment starts
            by moving on). Defaults to `-4.0`.
        normalize: weight-normalised energy (paper eq. 16). Defaults to `True`.
        inference_mode: the mode when not training, `None` for `mode`.
            Defaults to `None`.
        seed: seed of the noise. Defaults to `None`.
        kernel_initializer: initializer of the projections.
            Defaults to `"glorot_uniform"`.
        **kwargs: base layer arguments.

    Call arguments (standalone):
        inputs: `[query (B, Tq, Dq), value (B, Tv, Dv)]`; the recursion runs
            over the Tq queries in order.
        mask: `[query_mask, value_mask]`, entries may be None.
        training: whether noise and `mode` (else `inference_mode`) apply.
        return_attention_scores: also return the alignments (B, Tq, Tv).
            Defaults to `False`.

    Returns:
        The context `(B, Tq, Dv)` (and the alignments).

    Example:

    >>> import numpy as np, keras, attnkit
    >>> layer = attnkit.layers.MonotonicAttention(units=8, mode="recursive")
    >>> q = np.ones((2, 3, 4), "float32"); v = np.ones((2, 5, 6), "float32")
    >>> out, a = layer([q, v], return_attention_scores=True)
    >>> bool((np.asarray(keras.ops.convert_to_numpy(a)).sum(-1) <= 1 + 1e-6).all())
    True

    References:
        - Raffel et al. 2017, "Online and Linear-Time Attention by Enforcing
          Monotonic Alignments", https://arxiv.org/abs/1704.00784
    """

    def __init__(
        self,
        units=None,
        score="bahdanau",
        mode="parallel",
        sigmoid_noise=0.0,
        score_bias_init=-4.0,
        normalize=True,
        inference_mode=None,
        seed=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.score = _checks.one_of(score, "score", SCORES)
        self.mode = _checks.one_of(mode, "mode", MODES)
        self.inference_mode = _checks.one_of(
            inference_mode, "inference_mode", MODES, allow_none=True
        )
        if score == "bahdanau":
            _checks.positive_int(units, "units")
        elif units is not None:
            raise ValueError(
                'score="luong" projects the memory to the query size and takes no '
                f"`units`. Received: units={units!r}"
            )
        self.units = units
        self.sigmoid_noise = _checks.non_negative_number(sigmoid_noise, "sigmoid_noise")
        self.score_bias_init = _checks.number(score_bias_init, "score_bias_init")
        self.normalize = _checks.boolean(normalize, "normalize")
        self.seed = _checks.seed(seed)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # The noise is drawn inside the decoder's loop, where a SeedGenerator
        # cannot advance on JAX; it comes from a counter-based generator whose
        # seeds and step count travel in the recurrent state instead.
        self._noise_seeds = None
        if self.sigmoid_noise > 0:
            self._noise_seeds = _NoiseSeeds(seed, dtype="float32", name="noise_seeds")

    def build_mechanism(self, query_dim, memory_dim, input_dim=None):
        if self.score == "bahdanau":
            self._build_bahdanau(query_dim, memory_dim, self.units, self.normalize)
        else:
            self._build_luong(query_dim, memory_dim, "general", self.normalize)
        self.score_bias = self.add_weight(
            name="score_bias",
            shape=(),
            initializer=keras.initializers.Constant(self.score_bias_init),
            dtype=self.dtype,
        )
        self.built = True

    def initial_alignment(self, template):
        return first_position(template)

    def state_sizes(self, memory_length):
        return [counter_noise.STATE_SIZE] if self._noise_seeds is not None else []

    def initial_states(self, template):
        if self._noise_seeds is None:
            return []
        return [self._noise_seeds(template)]

    def step(self, query, memory, mask, previous, states, inputs=None, training=None):
        if self.score == "bahdanau":
            energies = self._bahdanau_energies(query, memory)
        else:
            energies = self._luong_energies(query, memory, "general")
        energies = ops.cast(energies, "float32") + ops.cast(self.score_bias, "float32")  # (B, Tv)
        mode = self.mode if training else (self.inference_mode or self.mode)
        new_states = list(states)  # the noise state, if any, passes through at inference
        if self._noise_seeds is not None and training:
            noise, noise_state = counter_noise.normal(states[0], energies)
            new_states = [noise_state]
            energies = energies + self.sigmoid_noise * noise
        if mode == "hard":
            p_choose = ops.cast(energies > 0, "float32")
        else:
            p_choose = ops.sigmoid(energies)
        if mask is not None:
            p_choose = p_choose * ops.cast(mask, "float32")
        fn = {
            "parallel": alignment.monotonic_parallel,
            "recursive": alignment.monotonic_recursive,
            "hard": alignment.monotonic_hard,
        }[mode]
        return fn(p_choose, previous), new_states

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "score": self.score,
            "mode": self.mode,
            "sigmoid_noise": self.sigmoid_noise,
            "score_bias_init": self.score_bias_init,
            "normalize": self.normalize,
            "inference_mode": self.inference_mode,
            "seed": self.seed,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
