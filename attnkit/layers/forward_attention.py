"""Forward attention (Zhang, Ling, Dai 2018) as a mechanism for AttentionRNNCell."""

from __future__ import annotations

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers.attention_mechanism import AttentionMechanism, first_position
from attnkit.ops import alignment


@keras.saving.register_keras_serializable(package="attnkit")
class ForwardAttention(AttentionMechanism):
    """Forward attention: each step the alignment stays or moves one position on.

    Zhang, Ling, Dai 2018 (https://arxiv.org/abs/1807.06736). For a query
    `q_t` (B, Dq), memory `x` (B, Tv, Dv), α̂_0 = [1, 0, ...]:

    1. `y_t = softmax(e_t)`, `e_tn = vᵀ tanh(W q_t + V x_n)` (Bahdanau).
    2. Without the transition agent:
       `α̂_t(n) ∝ (α̂_{t−1}(n) + α̂_{t−1}(n−1)) · y_t(n)`; with it:
       `α̂_t(n) ∝ ((1 − u_{t−1}) α̂_{t−1}(n) + u_{t−1} α̂_{t−1}(n−1)) · y_t(n)`,
       normalised over n (the paper's convention: u is the probability of
       moving forward, u_0 = 0.5).
    3. `c_t = Σ_n α̂_t(n) x_n`; with the agent
       `u_t = sigmoid(w_uᵀ [c_t; q_t; o_{t−1}] + b_u)`, where `o_{t−1}` is
       the cell's step input (the previous output under teacher forcing);
       standalone, without a third input, `[c_t; q_t]`. u is carried in the
       cell state (B, 1).

    Masking: masked positions get weight 0; a row without visible prior
    mass gets zeros, never NaN.

    Args:
        units: width U of the score projections.
        transition_agent: learn u (else the plain forward rule).
            Defaults to `True`.
        kernel_initializer: initializer of the projections.
            Defaults to `"glorot_uniform"`.
        **kwargs: base layer arguments.

    Call arguments (standalone):
        inputs: `[query (B, Tq, Dq), value (B, Tv, Dv)]` or with a third
            `(B, Tq, Di)` the previous outputs for the agent.
        mask: `[query_mask, value_mask]`, entries may be None.
        return_attention_scores: also return the alignments (B, Tq, Tv).
            Defaults to `False`.

    Returns:
        The context `(B, Tq, Dv)` (and the alignments).

    Example:

    >>> import numpy as np, keras, attnkit
    >>> layer = attnkit.layers.ForwardAttention(units=8)
    >>> q = np.ones((1, 2, 4), "float32"); v = np.ones((1, 5, 6), "float32")
    >>> out, a = layer([q, v], return_attention_scores=True)
    >>> bool((keras.ops.convert_to_numpy(a)[0, 0, 2:] == 0).all())
    True

    References:
        - Zhang, Ling, Dai 2018, "Forward Attention in Sequence-to-sequence
          Acoustic Modelling for Speech Synthesis", https://arxiv.org/abs/1807.06736
    """

    def __init__(
        self,
        units,
        transition_agent=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _checks.positive_int(units, "units")
        self.transition_agent = _checks.boolean(transition_agent, "transition_agent")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_mechanism(self, query_dim, memory_dim, input_dim=None):
        self._build_bahdanau(query_dim, memory_dim, self.units, False)
        if self.transition_agent:
            width = memory_dim + query_dim + (input_dim or 0)
            self.agent_kernel = self.add_weight(
                name="agent_kernel",
                shape=(width, 1),
                initializer=self.kernel_initializer,
                dtype=self.dtype,
            )
            self.agent_bias = self.add_weight(
                name="agent_bias", shape=(1,), initializer="zeros", dtype=self.dtype
            )
        self.built = True

    def initial_alignment(self, template):
        return first_position(template)

    def state_sizes(self, memory_length):
        return [1] if self.transition_agent else []

    def initial_states(self, template):
        return [template[:, :1] + 0.5] if self.transition_agent else []  # u_0 (B, 1)

    def step(self, query, memory, mask, previous, states, inputs=None, training=None):
        energies = self._bahdanau_energies(query, memory)  # (B, Tv)
        move = states[0] if self.transition_agent else None
        alpha = alignment.forward_attention(energies, previous, mask, move)  # (B, Tv)
        if not self.transition_agent:
            return alpha, []
        context = ops.einsum("bk,bkd->bd", ops.cast(alpha, memory.dtype), memory)  # (B, Dv)
        parts = [context, ops.cast(query, context.dtype)]
        if inputs is not None:
            parts.append(ops.cast(inputs, context.dtype))
        agent_in = ops.concatenate(parts, axis=-1)
        u = ops.sigmoid(
            ops.matmul(agent_in, ops.cast(self.agent_kernel, agent_in.dtype))
            + ops.cast(self.agent_bias, agent_in.dtype)
        )  # (B, 1)
        return alpha, [u]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "transition_agent": self.transition_agent,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
