"""Hard attention: Gumbel-softmax straight-through and top-k."""

from __future__ import annotations

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers import _base
from attnkit.layers._query_value import QueryValueMixin
from attnkit.ops import hard
from attnkit.ops.scores import at_least_float32, dot_score, general_score, scaled_dot_score

METHODS = ("gumbel", "topk")
SCORE_MODES = ("dot", "scaled_dot", "general")


@keras.saving.register_keras_serializable(package="attnkit")
class HardAttention(QueryValueMixin, keras.layers.Layer):
    """Hard attention: each query reads one value (or its k best values).

    For query `q` (B, Tq, Dq) and value `v` (B, Tv, Dv):

    1. scores `s` (B, Tq, Tv), per `score_mode`: `"dot"` `qᵀv`,
       `"scaled_dot"` `qᵀv / sqrt(Dv)`, `"general"` `qᵀ W v` with a learned
       `kernel` W (Dq, Dv).
    2. weights, per `method`:
       - `"gumbel"` (Jang, Gu, Poole 2016), in training: `g = -log(-log U)`,
         `y = softmax((s + g) / τ)`, forward weights `one_hot(argmax y)`
         exactly, gradient that of `y` (straight-through:
         `one_hot + y - stop_gradient(y)`). The noise comes from a
         `keras.random.SeedGenerator` seeded with `seed`.
       - `"topk"`: `softmax(s / τ)` over the `k` highest scores of each
         query, renormalised over them; zero elsewhere. The same in training
         and inference.
       At inference `"gumbel"` is the deterministic `one_hot(argmax s)`.
    3. output `Σ_j a_ij v_j`, (B, Tq, Dv): with one-hot weights, the chosen
       value itself.

    The REINFORCE estimator of Xu et al. 2015 (sampling from the softmax with
    a moving-average baseline) is not implemented: it needs the task's reward,
    which a layer does not see.

    Gradients: `"gumbel"` passes the gradient of the relaxed softmax to the
    scores; `"topk"` the gradient of the softmax over the kept scores, which
    is zero for `k=1` (the single weight is the constant 1); use `"gumbel"`
    to learn a single choice.

    Masking: masks are boolean, True = may attend. The Keras masks of the
    inputs (or `mask=[query_mask, value_mask]`) are combined with AND; a
    masked value is never chosen. A padded query gets zero weights and a zero
    output, and the query mask passes on to the output. A query with nothing
    to attend to gets zero weights and a zero output, never NaN.

    Args:
        method: `"gumbel"` or `"topk"`. Defaults to `"gumbel"`.
        temperature: τ > 0 dividing the scores in the softmax.
            Defaults to `1.0`.
        k: number of values kept per query (`"topk"` only). Defaults to `1`.
        score_mode: `"dot"`, `"scaled_dot"` or `"general"`.
            Defaults to `"dot"`.
        seed: integer seed of the Gumbel noise. Defaults to `None`.
        kernel_initializer: initializer of `kernel` (`"general"`).
            Defaults to `"glorot_uniform"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: list `[query, value]`, `(B, Tq, Dq)` and `(B, Tv, Dv)`.
        mask: list `[query_mask, value_mask]`; entries may be `None`.
            Defaults to the Keras masks of the inputs.
        training: whether the Gumbel noise is drawn. Defaults to `None`.
        return_attention_scores: also return the weights.
            Defaults to `False`.

    Returns:
        The output `(B, Tq, Dv)`, and with `return_attention_scores` the
        weights `(B, Tq, Tv)` (one-hot rows for `"gumbel"`, at most `k`
        non-zeros for `"topk"`).

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from attnkit.layers import HardAttention
    >>> query = np.random.normal(size=(2, 3, 8)).astype("float32")
    >>> value = np.random.normal(size=(2, 5, 8)).astype("float32")
    >>> layer = HardAttention(method="topk", k=2)
    >>> out, weights = layer([query, value], return_attention_scores=True)
    >>> ((keras.ops.convert_to_numpy(weights) > 0).sum(-1) == 2).all()
    np.True_

    References:
        - Jang, Gu, Poole 2016, "Categorical Reparameterization with
          Gumbel-Softmax", https://arxiv.org/abs/1611.01144
        - Xu et al. 2015, "Show, Attend and Tell", https://arxiv.org/abs/1502.03044
        - Luong, Pham, Manning 2015, https://arxiv.org/abs/1508.04025
    """

    _third_input = None  # exactly [query, value]
    _any_batch_rank = False  # (B, T, D) only

    def __init__(
        self,
        method="gumbel",
        temperature=1.0,
        k=1,
        score_mode="dot",
        seed=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.method = _checks.one_of(method, "method", METHODS)
        self.temperature = _checks.positive_number(temperature, "temperature")
        self.k = _checks.positive_int(k, "k")
        if method == "gumbel" and k != 1:
            raise ValueError(
                "method='gumbel' picks exactly one value per query; `k` is for "
                f"method='topk'. Received: k={k!r}"
            )
        self.score_mode = _checks.one_of(score_mode, "score_mode", SCORE_MODES)
        self.seed = _checks.seed(seed)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed_generator = keras.random.SeedGenerator(seed) if method == "gumbel" else None
        self.supports_masking = True

    def build(self, input_shape):
        (_, _, query_dim), (_, _, value_dim) = self._validate_inputs(input_shape)
        self.kernel = None
        if self.score_mode == "general":
            self.kernel = self.add_weight(
                name="kernel",
                shape=(query_dim, value_dim),
                initializer=self.kernel_initializer,
                dtype=self.dtype,
            )
        elif query_dim != value_dim:
            raise ValueError(
                f"score_mode={self.score_mode!r} needs query and value of the same "
                "feature size (score_mode='general' projects between sizes). "
                f"Received: query.shape[-1]={query_dim}, value.shape[-1]={value_dim}"
            )

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        self._validate_inputs(inputs, mask)
        (query, value, _), (query_mask, value_mask, _) = self._unpack_inputs(inputs, mask)
        scores = self._scores(query, value)  # (B, Tq, Tv)
        pad = _base.padding_mask(query_mask, [value_mask])  # (B, Tq, Tv) or None
        weights = self._weights(scores, pad, training)
        weights = ops.cast(weights, value.dtype)
        out = ops.einsum("bqk,bkd->bqd", weights, value)  # (B, Tq, Dv)
        if return_attention_scores:
            return out, weights
        return out

    def _scores(self, query, value):
        # Float32 logits: in float16 a dot product of representable inputs overflows.
        query, value = at_least_float32(query, value)
        if self.score_mode == "general":
            return general_score(query, value, self.kernel)  # (B, Tq, Tv)
        if self.score_mode == "scaled_dot":
            return scaled_dot_score(query, value)
        return dot_score(query, value)

    def _weights(self, scores, mask, training):
        if self.method == "topk":
            return hard.topk_weights(scores, self.k, mask, temperature=self.temperature)
        if training:
            return hard.gumbel_softmax_weights(
                scores, mask, temperature=self.temperature, seed=self.seed_generator
            )
        return hard.argmax_weights(scores, mask)

    def get_config(self):
        return {
            **super().get_config(),
            "method": self.method,
            "temperature": self.temperature,
            "k": self.k,
            "score_mode": self.score_mode,
            "seed": self.seed,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
