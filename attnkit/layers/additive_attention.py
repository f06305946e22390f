"""Additive (Bahdanau) attention: Keras' simplified form and the paper's."""

from __future__ import annotations

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers.attention import Attention
from attnkit.ops.scores import additive_score

_PAPER_KERNEL_STDDEV = 0.001


@keras.saving.register_keras_serializable(package="attnkit")
class AdditiveAttention(Attention):
    """Additive attention: `keras.layers.AdditiveAttention`, and true Bahdanau.

    Bahdanau, Cho and Bengio 2014 (https://arxiv.org/abs/1409.0473); Luong et
    al. 2015 call the same score "concat". For query `q` (B, Tq, Dq), value
    `v` (B, Tv, Dv) and key `k` (B, Tv, Dk) (the value when no key is given):

    1. scores (B, Tq, Tv):
       - `units=None` (Keras' simplified form, no projections, Dq == Dk):
         `e_ij = Σ_d scale_d · tanh(q_id + k_jd)`.
       - `units=n` (the paper): `e_ij = scaleᵀ tanh(W_q q_i + W_k k_j + b)`
         with `query_kernel` W_q (Dq, n), `key_kernel` W_k (Dk, n), `bias`
         b (n,) and `scale` (n,), the paper's `v_a`.
       Without `use_scale`, `scale` is a vector of ones and is not learned.
    2. weights = softmax(scores) over the visible keys (see Masking).
    3. output = weights · v, shape (B, Tq, Dv).

    The projections are applied once per query and per key (O((Tq + Tv)·n));
    only the tanh is evaluated per (query, key) pair, in blocks for long inputs.

    `paper_init=True` uses the paper's initialisation: W_q, W_k ~ N(0, 0.001²),
    `scale` and `bias` zero, so every score is 0 and attention starts exactly
    uniform.

    Masking: masks are boolean, True = may attend. The Keras masks of the
    inputs (or `mask=[query_mask, value_mask(, key_mask)]`), the causal mask
    (`use_causal_mask`, query `i` sees keys `j <= i`) and the sliding window
    are combined with AND. A padded query gets zero weights and a zero
    output, and the query mask passes on to the output. A query row with
    nothing to attend to gets zero weights and a zero output, never NaN; every
    other row of the returned scores sums to 1.

    Args:
        use_scale: whether `scale` is a learned vector (otherwise ones).
            Defaults to `True`.
        dropout: fraction of the attention weights dropped in training.
            Defaults to `0.0`.
        units: width n of the Bahdanau projections, or `None` for Keras'
            simplified form without projections. Defaults to `None`.
        use_bias: whether the projected query gets a bias `b` (only with
            `units`). Defaults to `True`.
        paper_init: initialise as in the paper (needs `units` and
            `use_scale`; excludes the initializer arguments).
            Defaults to `False`.
        kernel_initializer: initializer of `query_kernel` and `key_kernel`;
            `None` means `"glorot_uniform"`. Defaults to `None`.
        scale_initializer: initializer of `scale`; `None` means
            `"glorot_uniform"` (as in Keras). Defaults to `None`.
        bias_initializer: initializer of `bias`; `None` means `"zeros"`.
            Defaults to `None`.
        **kwargs: `seed`, `sliding_window` and the base layer arguments.

    Call arguments:
        inputs: list `[query, value]` or `[query, value, key]`.
        mask: list `[query_mask, value_mask(, key_mask)]`. Defaults to the
            Keras masks of the inputs.
        training: whether dropout is active. Defaults to `None`.
        return_attention_scores: also return the weights. Defaults to `False`.
        use_causal_mask: query `i` may not attend to keys `j > i`.
            Defaults to `False`.

    Returns:
        The output `(..., Tq, Dv)`, and with `return_attention_scores` the
        weights `(..., Tq, Tv)`.

    Example:

    >>> import numpy as np
    >>> import attnkit, keras
    >>> query = np.random.normal(size=(2, 3, 6)).astype("float32")
    >>> value = np.random.normal(size=(2, 5, 8)).astype("float32")
    >>> layer = attnkit.layers.AdditiveAttention(units=16, paper_init=True)
    >>> out, scores = layer([query, value], return_attention_scores=True)
    >>> bool(np.allclose(keras.ops.convert_to_numpy(scores), 1 / 5))
    True

    References:
        - Bahdanau, Cho, Bengio 2014, "Neural Machine Translation by Jointly
          Learning to Align and Translate", https://arxiv.org/abs/1409.0473
        - Luong, Pham, Manning 2015, https://arxiv.org/abs/1508.04025
    """

    def __init__(
        self,
        use_scale=True,
        dropout=0.0,
        units=None,
        use_bias=True,
        paper_init=False,
        kernel_initializer=None,
        scale_initializer=None,
        bias_initializer=None,
        **kwargs,
    ):
        if "score_mode" in kwargs:
            raise ValueError(
                "AdditiveAttention has no `score_mode` (its score is additive). "
                f"Received: score_mode={kwargs['score_mode']!r}"
            )
        super().__init__(use_scale=use_scale, dropout=dropout, **kwargs)
        self.units = _checks.positive_int(units, "units", allow_none=True)
        self.use_bias = _checks.boolean(use_bias, "use_bias")
        self.paper_init = _checks.boolean(paper_init, "paper_init")
        if paper_init:
            if units is None:
                raise ValueError(
                    "`paper_init=True` initialises the Bahdanau projections and "
                    f"needs `units`. Received: units={units!r}"
                )
            if not use_scale:
                raise ValueError(
                    "`paper_init=True` starts the learned `scale` (v_a) at zero "
                    f"and needs `use_scale=True`. Received: use_scale={use_scale!r}"
                )
            given = {
                n: v
                for n, v in (
                    ("kernel_initializer", kernel_initializer),
                    ("scale_initializer", scale_initializer),
                    ("bias_initializer", bias_initializer),
                )
                if v is not None
            }
            if given:
                name, value = next(iter(given.items()))
                raise ValueError(
                    "`paper_init=True` sets the initializers itself; pass either "
                    f"it or initializers. Received: {name}={value!r}"
                )
        if units is None and kernel_initializer is not None:
            raise ValueError(
                "`kernel_initializer` initialises the projections of `units`; "
                "without `units` there are none. "
                f"Received: kernel_initializer={kernel_initializer!r}"
            )
        self.kernel_initializer = _get_initializer(kernel_initializer)
        self.scale_initializer = _get_initializer(scale_initializer)
        self.bias_initializer = _get_initializer(bias_initializer)

    def build(self, input_shape):
        self._validate_inputs(input_shape)
        query_dim = input_shape[0][-1]
        key_dim = input_shape[2 if len(input_shape) > 2 else 1][-1]
        if self.units is None and query_dim != key_dim:
            raise ValueError(
                "Without `units`, query and key must have the same feature size "
                "(set `units` to project both). Received: "
                f"query.shape[-1]={query_dim}, key.shape[-1]={key_dim}"
            )
        width = query_dim if self.units is None else self.units
        if self.paper_init:
            kernel_init = keras.initializers.RandomNormal(stddev=_PAPER_KERNEL_STDDEV)
            scale_init, bias_init = "zeros", "zeros"
        else:
            kernel_init = self.kernel_initializer or "glorot_uniform"
            scale_init = self.scale_initializer or "glorot_uniform"
            bias_init = self.bias_initializer or "zeros"
        self.query_kernel = self.key_kernel = self.bias = None
        if self.units is not None:
            self.query_kernel = self.add_weight(
                name="query_kernel",
                shape=(query_dim, width),
                initializer=kernel_init,
                dtype=self.dtype,
            )
            self.key_kernel = self.add_weight(
                name="key_kernel",
                shape=(key_dim, width),
                initializer=_clone(kernel_init),
                dtype=self.dtype,
            )
            if self.use_bias:
                self.bias = self.add_weight(
                    name="bias", shape=(width,), initializer=bias_init, dtype=self.dtype
                )
        self.scale = None
        if self.use_scale:
            self.scale = self.add_weight(
                name="scale", shape=(width,), initializer=scale_init, dtype=self.dtype
            )

    def _calculate_scores(self, query, key):
        """``scaleᵀ tanh(W_q q + W_k k + b)`` (with `units`) or ``Σ_d scale_d ·
        tanh(q_d + k_d)``: (..., Tq, Dq), (..., Tv, Dk) -> (..., Tq, Tv)."""
        query, key = ops.convert_to_tensor(query), ops.convert_to_tensor(key)
        if self.units is not None:
            query = ops.matmul(query, ops.cast(self.query_kernel, query.dtype))  # (..., Tq, n)
            key = ops.matmul(key, ops.cast(self.key_kernel, key.dtype))  # (..., Tv, n)
            if self.bias is not None:
                query = query + ops.cast(self.bias, query.dtype)
        if self.scale is None:
            v = ops.ones((query.shape[-1],), dtype=query.dtype)
        else:
            v = ops.cast(self.scale, query.dtype)
        return additive_score(query, key, v)  # (..., Tq, Tv)

    def get_config(self):
        config = super().get_config()
        del config["score_mode"]
        return {
            **config,
            "units": self.units,
            "use_bias": self.use_bias,
            "paper_init": self.paper_init,
            "kernel_initializer": _serialize(self.kernel_initializer),
            "scale_initializer": _serialize(self.scale_initializer),
            "bias_initializer": _serialize(self.bias_initializer),
        }


def _get_initializer(value):
    return None if value is None else keras.initializers.get(value)


def _serialize(initializer):
    return None if initializer is None else keras.initializers.serialize(initializer)


def _clone(initializer):
    # A fresh instance, so the two kernels do not get the same values.
    if isinstance(initializer, str):
        return initializer
    return initializer.__class__.from_config(initializer.get_config())
