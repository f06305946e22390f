"""Luong's multiplicative attention, a mechanism for ``AttentionRNNCell``."""

from __future__ import annotations

import keras

from attnkit import _checks
from attnkit.layers.attention_mechanism import AttentionMechanism
from attnkit.ops.softmax import masked_softmax

SCORE_MODES = ("dot", "general", "scaled_dot")


@keras.saving.register_keras_serializable(package="attnkit")
class LuongAttention(AttentionMechanism):
    """Luong's multiplicative attention as a mechanism for `AttentionRNNCell`.

    Luong, Pham and Manning 2015 (https://arxiv.org/abs/1508.04025). For a
    query `s` (B, Dq) and memory `h` (B, Tv, Dv):

    1. energies `e_j`: `"dot"`: `sᵀ h_j`; `"general"`: `sᵀ W h_j` with the
       learned `memory_kernel` W (Dv, Dq); `"scaled_dot"`: `sᵀ h_j / sqrt(Dq)`.
       With `use_scale`, a learned scalar `scale` (init 1) multiplies `e`.
    2. alignment `α = softmax(e)` over the visible memory positions.

    Masking: memory positions with mask False get weight 0; a row with no
    visible position gets zeros, never NaN. Standalone, a padded query gets
    a zero output and the query mask passes on.

    Args:
        score_mode: `"dot"`, `"general"` or `"scaled_dot"`.
            Defaults to `"general"`.
        use_scale: learn a scalar multiplying the energies. Defaults to `False`.
        kernel_initializer: initializer of `memory_kernel`.
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
    >>> layer = attnkit.layers.LuongAttention(score_mode="general")
    >>> q = np.ones((2, 3, 4), "float32"); v = np.ones((2, 5, 6), "float32")
    >>> tuple(layer([q, v]).shape)
    (2, 3, 6)

    References:
        - Luong, Pham, Manning 2015, https://arxiv.org/abs/1508.04025
    """

    def __init__(
        self,
        score_mode="general",
        use_scale=False,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.score_mode = _checks.one_of(score_mode, "score_mode", SCORE_MODES)
        self.use_scale = _checks.boolean(use_scale, "use_scale")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_mechanism(self, query_dim, memory_dim, input_dim=None):
        self._build_luong(query_dim, memory_dim, self.score_mode, self.use_scale)
        self.built = True

    def step(self, query, memory, mask, previous, states, inputs=None, training=None):
        energies = self._luong_energies(query, memory, self.score_mode)
        return masked_softmax(energies, mask, axis=-1), []

    def get_config(self):
        return {
            **super().get_config(),
            "score_mode": self.score_mode,
            "use_scale": self.use_scale,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
