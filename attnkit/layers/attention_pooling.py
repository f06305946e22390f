"""Attention pooling: a sequence to a vector (HAN; Raffel & Ellis feed-forward)."""

from __future__ import annotations

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers import _base
from attnkit.ops import pooling

SCORES = ("han", "feedforward")


@keras.saving.register_keras_serializable(package="attnkit")
class AttentionPooling(keras.layers.Layer):
    """Attention pooling: a weighted average of a sequence's steps.

    The layer written by hand after `LSTM(return_sequences=True)`: it learns
    which steps matter and returns their weighted sum. For inputs `h`
    (B, T, D):

    `score="han"` (Yang et al. 2016, hierarchical attention networks):

    1. `u_t = tanh(W h_t + b)`, `W` (D, U), `b` (U,), U = `units`.
    2. `e_qt = u_tᵀ u_q`, with `num_queries` learned context vectors `u_q`
       (the paper's `u_w`; `context` (U, Q)).
    3. `α_q = softmax_t(e_q)`; `out_q = Σ_t α_qt h_t`.

    `score="feedforward"` (Raffel & Ellis 2015, feed-forward attention):

    1. `e_qt = tanh(w_qᵀ h_t + b_q)`: a scalar per step, in (-1, 1),
       `kernel` (D, Q), `bias` (Q,). No `units`.
    2. `α_q = softmax_t(e_q)`; `out_q = Σ_t α_qt h_t`.

    The output is `(B, D)` with one query and `(B, Q, D)` with
    `num_queries=Q > 1`. Feed-forward scores are bounded, so at T = 10000 no
    weight exceeds e²/T ≈ 7.4e-4; HAN scores are unbounded.

    Masking: the Keras mask of the input (or `mask=`, boolean `(B, T)`,
    True = keep) removes padded steps: they get exactly zero weight and the
    weights of the other steps sum to 1. A sequence with every step masked
    gets all-zero weights and pools to a zero vector, never NaN. The time
    axis is reduced away, so no mask passes on (`compute_mask` returns
    None).

    Args:
        units: width U of the HAN projection; `None` means the input's
            feature size D. Only for `score="han"`. Defaults to `None`.
        num_queries: number Q of learned queries, each pooling its own
            vector. Defaults to `1`.
        score: `"han"` or `"feedforward"`. Defaults to `"han"`.
        use_bias: whether the scores get the bias `b`. Defaults to `True`.
        dropout: fraction of the weights dropped in training (the kept ones
            are scaled by `1 / (1 - dropout)`). Defaults to `0.0`.
        seed: integer seed for the dropout. Defaults to `None`.
        kernel_initializer: initializer of `kernel`.
            Defaults to `"glorot_uniform"`.
        context_initializer: initializer of `context` (HAN only).
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of `bias`. Defaults to `"zeros"`.
        attention_dim: alias of `units`, the name used by the hand-written
            layer (`AttentionLayer(attention_dim)`). Defaults to `None`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, T, D)`.
        mask: boolean `(B, T)`, True = keep. Defaults to the input's Keras
            mask.
        training: whether dropout is active. Defaults to `None`.
        return_attention_scores: also return the weights.
            Defaults to `False`.

    Returns:
        `(B, D)` (or `(B, Q, D)`), and with `return_attention_scores` the
        weights `(B, T)` (or `(B, Q, T)`), taken before dropout.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from attnkit.layers import AttentionPooling
    >>> x = np.random.normal(size=(2, 7, 8)).astype("float32")
    >>> layer = AttentionPooling(units=16)
    >>> out, weights = layer(x, return_attention_scores=True)
    >>> tuple(out.shape), tuple(weights.shape)
    ((2, 8), (2, 7))
    >>> bool(np.allclose(keras.ops.convert_to_numpy(weights).sum(-1), 1.0))
    True

    References:
        - Yang et al. 2016, "Hierarchical Attention Networks for Document
          Classification", NAACL, https://aclanthology.org/N16-1174
        - Raffel, Ellis 2015, "Feed-Forward Networks with Attention Can Solve
          Some Long-Term Memory Problems", https://arxiv.org/abs/1512.08756
    """

    def __init__(
        self,
        units=None,
        num_queries=1,
        score="han",
        use_bias=True,
        dropout=0.0,
        seed=None,
        kernel_initializer="glorot_uniform",
        context_initializer="glorot_uniform",
        bias_initializer="zeros",
        attention_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention_dim is not None:
            if units is not None:
                raise ValueError(
                    "`attention_dim` is an alias of `units`; pass one of them. "
                    f"Received: units={units!r}, attention_dim={attention_dim!r}"
                )
            _checks.positive_int(attention_dim, "attention_dim")
            units = attention_dim
        _checks.one_of(score, "score", SCORES)
        self.units = _checks.positive_int(units, "units", allow_none=True)
        if score == "feedforward" and units is not None:
            raise ValueError(
                "score='feedforward' computes a scalar tanh(w h_t + b) per step "
                f"and has no `units`. Received: units={units!r}"
            )
        self.num_queries = _checks.positive_int(num_queries, "num_queries")
        self.score = score
        self.use_bias = _checks.boolean(use_bias, "use_bias")
        self.dropout = _checks.rate(dropout)
        self.seed = _checks.seed(seed)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.context_initializer = keras.initializers.get(context_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout > 0 else None
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "AttentionPooling expects inputs of shape (B, T, D) with a known "
                f"D. Received: input_shape={input_shape}"
            )
        dim = input_shape[-1]
        self.context = None
        self.bias = None
        if self.score == "han":
            width = dim if self.units is None else self.units
            self.kernel = self.add_weight(
                name="kernel",
                shape=(dim, width),
                initializer=self.kernel_initializer,
                dtype=self.dtype,
            )
            if self.use_bias:
                self.bias = self.add_weight(
                    name="bias",
                    shape=(width,),
                    initializer=self.bias_initializer,
                    dtype=self.dtype,
                )
            self.context = self.add_weight(
                name="context",
                shape=(width, self.num_queries),
                initializer=self.context_initializer,
                dtype=self.dtype,
            )
        else:
            self.kernel = self.add_weight(
                name="kernel",
                shape=(dim, self.num_queries),
                initializer=self.kernel_initializer,
                dtype=self.dtype,
            )
            if self.use_bias:
                self.bias = self.add_weight(
                    name="bias",
                    shape=(self.num_queries,),
                    initializer=self.bias_initializer,
                    dtype=self.dtype,
                )

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        _base.check_mask(mask, "mask", tuple(inputs.shape)[:-1], "(B, T)")
        dtype = inputs.dtype
        kernel = ops.cast(self.kernel, dtype)
        bias = None if self.bias is None else ops.cast(self.bias, dtype)
        if self.score == "han":
            scores = pooling.han_scores(inputs, kernel, ops.cast(self.context, dtype), bias)
        else:
            scores = pooling.feedforward_scores(inputs, kernel, bias)  # (B, Q, T)
        dropout_active = bool(training) and self.dropout > 0
        out, weights = pooling.attention_pool(
            inputs,
            scores,
            mask,
            dropout=self.dropout if dropout_active else 0.0,
            seed=self.seed_generator,
            return_weights=True,
        )  # (B, Q, D), (B, Q, T)
        if self.num_queries == 1:
            out, weights = out[:, 0], weights[:, 0]  # (B, D), (B, T)
        if return_attention_scores:
            return out, weights
        return out

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        if self.num_queries == 1:
            return (input_shape[0], input_shape[-1])
        return (input_shape[0], self.num_queries, input_shape[-1])

    def compute_output_spec(self, inputs, mask=None, training=None, return_attention_scores=False):
        shape = tuple(inputs.shape)
        out = keras.KerasTensor(self.compute_output_shape(shape), dtype=self.compute_dtype)
        if not return_attention_scores:
            return out
        queries = () if self.num_queries == 1 else (self.num_queries,)
        weights = keras.KerasTensor((shape[0], *queries, shape[1]), dtype=self.compute_dtype)
        return out, weights

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "num_queries": self.num_queries,
            "score": self.score,
            "use_bias": self.use_bias,
            "dropout": self.dropout,
            "seed": self.seed,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "context_initializer": keras.initializers.serialize(self.context_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
