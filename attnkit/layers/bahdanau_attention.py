"""Bahdanau's additive attention, a mechanism for ``AttentionRNNCell``."""

from __future__ import annotations

import keras

from attnkit import _checks
from attnkit.layers.attention_mechanism import AttentionMechanism
from attnkit.ops.softmax import masked_softmax


@keras.saving.register_keras_serializable(package="attnkit")
class BahdanauAttention(AttentionMechanism):
    """Bahdanau's additive attention as a mechanism for `AttentionRNNCell`.

    Bahdanau, Cho and Bengio 2014 (https://arxiv.org/abs/1409.0473). For a
    query `s` (B, Dq) and memory `h` (B, Tv, Dv):

    1. energies `e_j = vᵀ tanh(W s + V h_j)` with `query_kernel` W (Dq, U),
       `memory_kernel` V (Dv, U) and `attention_v` v (U,). With `normalize`,
       v is weight-normalised, `g · v / |v|` (learned `attention_g`, init
       `sqrt(1/U)`), and a bias `attention_b` (U,) joins inside the tanh
       (Salimans and Kingma 2016, as in Raffel et al. 2017).
    2. alignment `α = softmax(e)` over the visible memory positions.

    Masking: as `LuongAttention`.

    Args:
        units: the width U of the projections.
        normalize: weight-normalise v and add a bias. Defaults to `False`.
        kernel_initializer: initializer of W, V and v.
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
    >>> layer = attnkit.layers.BahdanauAttention(units=8)
    >>> q = np.ones((2, 3, 4), "float32"); v = np.ones((2, 5, 6), "float32")
    >>> tuple(layer([q, v]).shape)
    (2, 3, 6)

    References:
        - Bahdanau, Cho, Bengio 2014, https://arxiv.org/abs/1409.0473
    """

    def __init__(self, units, normalize=False, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = _checks.positive_int(units, "units")
        self.normalize = _checks.boolean(normalize, "normalize")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_mechanism(self, query_dim, memory_dim, input_dim=None):
        self._build_bahdanau(query_dim, memory_dim, self.units, self.normalize)
        self.built = True

    def step(self, query, memory, mask, previous, states, inputs=None, training=None):
        energies = self._bahdanau_energies(query, memory)
        return masked_softmax(energies, mask, axis=-1), []

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "normalize": self.normalize,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
