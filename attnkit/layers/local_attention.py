"""Luong et al. 2015's local attention: local-m and local-p."""

from __future__ import annotations

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers import _base
from attnkit.layers._query_value import QueryValueMixin
from attnkit.ops import local
from attnkit.ops.scores import additive_score, at_least_float32, dot_score, general_score
from attnkit.ops.softmax import softmax_dtype

MODES = ("local-m", "local-p")
SCORE_MODES = ("dot", "general", "concat")


@keras.saving.register_keras_serializable(package="attnkit")
class LocalAttention(QueryValueMixin, keras.layers.Layer):
    """Local attention of Luong et al. 2015: a Gaussian window around `p_t`.

    Luong, Pham and Manning 2015 (https://arxiv.org/abs/1508.04025, §3.2).
    For queries `h_t` (B, Tq, Dq) and values `h̄_s` (B, Tv, Dv), positions
    0-based (`s = 0 .. Tv - 1`), window half-width D = `window`:

    1. the aligned position `p_t`:
       - `"local-m"` (monotonic): `p_t = t` when Tq == Tv, otherwise
         `t · (Tv - 1) / (Tq - 1)` (first query on the first key, last on
         the last);
       - `"local-p"` (predictive): `p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))`,
         with `position_kernel` W_p (Dq, P), `position_vector` v_p (P,) and S
         the value length: the number of unmasked values when a value mask is
         given, else Tv.
    2. scores `score(h_t, h̄_s)`, per `score_mode`: `"dot"` `h_tᵀ h̄_s`
       (Dq == Dv); `"general"` `h_tᵀ W_a h̄_s`, `kernel` W_a (Dq, Dv);
       `"concat"` `v_aᵀ tanh(W_a [h_t; h̄_s])`, written as
       `concat_vector`ᵀ `tanh(h_t W_q + h̄_s W_k)` with `query_kernel`,
       `key_kernel` (D·, Dq) and `concat_vector` (Dq,).
    3. `align = softmax(score)` over the keys with `|s - p_t| <= D`.
    4. `a_t(s) = align_t(s) · exp(-(s - p_t)² / (2σ²))`, σ = D / 2 (or
       `sigma`); `a_t(s) = 0` exactly outside `[p_t - D, p_t + D]`.
    5. output `c_t = Σ_s a_t(s) h̄_s`, (B, Tq, Dv): the context vector (the
       paper's attentional state `tanh(W_c [c_t; h_t])` is left to the model).

    Renormalisation: as in the paper (eq. 10 multiplies the aligned weights
    by the Gaussian and stops), the weights are not renormalised after the
    Gaussian, so a row sums to at most 1. Then `window >= Tv` with `sigma`
    large enough (the Gaussian rounds to 1) is exactly global attention.
    Gradients reach W_p and v_p through the Gaussian term (the window's
    edges are a step function with no gradient).

    Masking: masks are boolean, True = may attend. The Keras masks of the
    inputs (or `mask=[query_mask, value_mask]`) and the window are combined
    with AND. A padded query gets zero weights and a zero output, and the
    query mask passes on to the output. A query whose window holds no
    visible key gets zero weights and a zero output, never NaN.

    Args:
        window: D, the half-width of the window (the paper uses 10).
        mode: `"local-p"` or `"local-m"`. Defaults to `"local-p"`.
        score_mode: `"dot"`, `"general"` or `"concat"`.
            Defaults to `"general"`.
        sigma: standard deviation of the Gaussian; `None` means
            `window / 2`. Defaults to `None`.
        position_units: width P of W_p (local-p only); `None` means Dq.
            Defaults to `None`.
        kernel_initializer: initializer of every kernel and vector.
            Defaults to `"glorot_uniform"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: list `[query, value]`, `(B, Tq, Dq)` and `(B, Tv, Dv)`.
        mask: list `[query_mask, value_mask]` of boolean `(B, Tq)` /
            `(B, Tv)` masks; entries may be `None`. Defaults to the Keras
            masks of the inputs.
        return_attention_scores: also return the weights `a`.
            Defaults to `False`.

    Returns:
        The context `(B, Tq, Dv)`, and with `return_attention_scores` the
        weights `(B, Tq, Tv)`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from attnkit.layers import LocalAttention
    >>> query = np.random.normal(size=(2, 4, 8)).astype("float32")
    >>> value = np.random.normal(size=(2, 9, 8)).astype("float32")
    >>> layer = LocalAttention(window=2, mode="local-m")
    >>> out, weights = layer([query, value], return_attention_scores=True)
    >>> tuple(out.shape), tuple(weights.shape)
    ((2, 4, 8), (2, 4, 9))
    >>> bool((keras.ops.convert_to_numpy(weights)[:, 0, 3:] == 0).all())
    True

    References:
        - Luong, Pham, Manning 2015, "Effective Approaches to Attention-based
          Neural Machine Translation", https://arxiv.org/abs/1508.04025
    """

    _third_input = None  # exactly [query, value]
    _any_batch_rank = False  # (B, T, D) only

    def __init__(
        self,
        window,
        mode="local-p",
        score_mode="general",
        sigma=None,
        position_units=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.window = _checks.positive_int(window, "window")
        self.mode = _checks.one_of(mode, "mode", MODES)
        self.score_mode = _checks.one_of(score_mode, "score_mode", SCORE_MODES)
        self.sigma = _checks.positive_number(sigma, "sigma", allow_none=True)
        self.position_units = _checks.positive_int(
            position_units, "position_units", allow_none=True
        )
        if mode == "local-m" and position_units is not None:
            raise ValueError(
                "local-m aligns p_t = t and has no position network; `position_units` "
                f"is for local-p. Received: position_units={position_units!r}"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        (_, _, query_dim), (_, _, value_dim) = self._validate_inputs(input_shape)
        if self.score_mode == "dot" and query_dim != value_dim:
            raise ValueError(
                "score_mode='dot' needs query and value of the same feature size "
                "(score_mode='general' projects between sizes). Received: "
                f"query.shape[-1]={query_dim}, value.shape[-1]={value_dim}"
            )

        def weight(name, shape):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=self.kernel_initializer,
                dtype=self.dtype,
            )

        if self.score_mode == "general":
            self.kernel = weight("kernel", (query_dim, value_dim))
        elif self.score_mode == "concat":
            self.query_kernel = weight("query_kernel", (query_dim, query_dim))
            self.key_kernel = weight("key_kernel", (value_dim, query_dim))
            self.concat_vector = weight("concat_vector", (query_dim,))
        if self.mode == "local-p":
            units = self.position_units or query_dim
            self.position_kernel = weight("position_kernel", (query_dim, units))
            self.position_vector = weight("position_vector", (units,))

    def call(self, inputs, mask=None, return_attention_scores=False):
        self._validate_inputs(inputs, mask)
        (query, value, _), (query_mask, value_mask, _) = self._unpack_inputs(inputs, mask)
        scores = self._scores(query, value)  # (B, Tq, Tv)
        positions = self._positions(query, value, value_mask)  # (Tq,) or (B, Tq)
        pad = _base.padding_mask(query_mask, [value_mask])  # (B, Tq, Tv) or None
        return local.local_attention(
            scores,
            value,
            positions,
            self.window,
            sigma=self.sigma,
            mask=pad,
            return_weights=return_attention_scores,
        )

    def _scores(self, query, value):
        # Float32 logits: in float16 a dot product of representable inputs overflows.
        query, value = at_least_float32(query, value)
        dtype = query.dtype
        if self.score_mode == "concat":
            q = ops.matmul(query, ops.cast(self.query_kernel, dtype))  # (B, Tq, Dq)
            k = ops.matmul(value, ops.cast(self.key_kernel, dtype))  # (B, Tv, Dq)
            return additive_score(q, k, ops.cast(self.concat_vector, dtype))  # (B, Tq, Tv)
        if self.score_mode == "general":
            return general_score(query, value, self.kernel)  # (B, Tq, Tv)
        return dot_score(query, value)  # (B, Tq, Tv)

    def _positions(self, query, value, value_mask):
        tq, tv = ops.shape(query)[1], ops.shape(value)[1]
        dtype = softmax_dtype(query.dtype)
        if self.mode == "local-m":
            return local.monotonic_positions(tq, tv, dtype)  # (Tq,)
        length = tv
        if value_mask is not None:
            length = ops.sum(ops.cast(value_mask, dtype), axis=-1, keepdims=True)  # (B, 1)
        return local.predictive_positions(
            ops.cast(query, dtype),
            ops.cast(self.position_kernel, dtype),
            ops.cast(self.position_vector, dtype),
            length,
        )  # (B, Tq)

    def get_config(self):
        return {
            **super().get_config(),
            "window": self.window,
            "mode": self.mode,
            "score_mode": self.score_mode,
            "sigma": self.sigma,
            "position_units": self.position_units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
