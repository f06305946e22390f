"""Location-sensitive attention (Chorowski 2015; Tacotron 2) for AttentionRNNCell."""

from __future__ import annotations

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers.attention_mechanism import AttentionMechanism
from attnkit.ops import alignment
from attnkit.ops.softmax import masked_softmax


@keras.saving.register_keras_serializable(package="attnkit")
class LocationSensitiveAttention(AttentionMechanism):
    """Additive attention that also sees where it attended before.

    Chorowski et al. 2015 (https://arxiv.org/abs/1506.07503), with the
    cumulative alignment of Tacotron 2 (Shen et al. 2017,
    https://arxiv.org/abs/1712.05884). For a query `s` (B, Dq), memory `h`
    (B, Tv, Dv):

    1. `f = F * a` (B, Tv, `filters`): a 1-D convolution ("same" padding,
       no bias) of `a` = the cumulative alignment `Σ_{k<i} α_k` (zeros at the
       first step) with `cumulative`, else the previous alignment `α_{i−1}`.
       A single input channel either way (Tacotron 2's text; some
       implementations stack both as two channels).
    2. `e_j = vᵀ tanh(W s + V h_j + U f_j)` with `location_kernel` U
       (`filters`, units).
    3. `α = softmax(e)`, or with `smoothing` `α = σ(e) / Σ σ(e)`
       (Chorowski's smoothing), over the visible positions.

    Masking: masked positions get weight 0; a row with no visible position
    gets zeros, never NaN.

    Args:
        units: width of the score projections.
        filters: number of location filters. Defaults to `32`.
        kernel_size: width of the location convolution. Defaults to `31`.
        cumulative: convolve the cumulative alignment (else the previous
            one). Defaults to `True`.
        smoothing: sigmoid smoothing instead of softmax. Defaults to `False`.
        kernel_initializer: initializer of the projections and filters.
            Defaults to `"glorot_uniform"`.
        **kwargs: base layer arguments.

    Call arguments (standalone):
        inputs: `[query (B, Tq, Dq), value (B, Tv, Dv)]`.
        mask: `[query_mask, value_mask]`, entries may be None.
        return_attention_scores: also return the alignments (B, Tq, Tv).
            Defaults to `False`.

    Returns:
        The context `(B, Tq, Dv)` (and the alignments).

    Example:

    >>> import numpy as np, attnkit
    >>> layer = attnkit.layers.LocationSensitiveAttention(8, filters=4, kernel_size=3)
    >>> q = np.ones((2, 3, 4), "float32"); v = np.ones((2, 5, 6), "float32")
    >>> tuple(layer([q, v]).shape)
    (2, 3, 6)

    References:
        - Chorowski et al. 2015, "Attention-Based Models for Speech
          Recognition", https://arxiv.org/abs/1506.07503
        - Shen et al. 2017 (Tacotron 2), https://arxiv.org/abs/1712.05884
    """

    def __init__(
        self,
        units,
        filters=32,
        kernel_size=31,
        cumulative=True,
        smoothing=False,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _checks.positive_int(units, "units")
        self.filters = _checks.positive_int(filters, "filters")
        self.kernel_size = _checks.positive_int(kernel_size, "kernel_size")
        self.cumulative = _checks.boolean(cumulative, "cumulative")
        self.smoothing = _checks.boolean(smoothing, "smoothing")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_mechanism(self, query_dim, memory_dim, input_dim=None):
        self._build_bahdanau(query_dim, memory_dim, self.units, False)
        self.location_filters = self.add_weight(
            name="location_filters",
            shape=(self.kernel_size, 1, self.filters),
            initializer=self.kernel_initializer,
            dtype=self.dtype,
        )
        self.location_kernel = self.add_weight(
            name="location_kernel",
            shape=(self.filters, self.units),
            initializer=self.kernel_initializer,
            dtype=self.dtype,
        )
        self.built = True

    def state_sizes(self, memory_length):
        return [memory_length] if self.cumulative else []

    def initial_states(self, template):
        return [template] if self.cumulative else []  # Σ α = 0 (B, Tv)

    def step(self, query, memory, mask, previous, states, inputs=None, training=None):
        source = states[0] if self.cumulative else previous  # (B, Tv)
        source = ops.cast(source, memory.dtype)
        features = alignment.location_features(source, self.location_filters)  # (B, Tv, F)
        location = ops.matmul(
            features, ops.cast(self.location_kernel, features.dtype)
        )  # (B, Tv, U)
        energies = ops.cast(self._bahdanau_energies(query, memory, location), "float32")
        if self.smoothing:
            weights = ops.sigmoid(energies)
            if mask is not None:
                weights = weights * ops.cast(mask, weights.dtype)
            total = ops.sum(weights, axis=-1, keepdims=True)
            alpha = weights / ops.where(total > 0, total, ops.ones_like(total))
        else:
            alpha = masked_softmax(energies, mask, axis=-1)
        if not self.cumulative:
            return alpha, []
        return alpha, [ops.cast(source, alpha.dtype) + alpha]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "cumulative": self.cumulative,
            "smoothing": self.smoothing,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
