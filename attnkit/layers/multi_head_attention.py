"""Multi-head attention: a drop-in superset of ``keras.layers.MultiHeadAttention``."""

from __future__ import annotations

import math
import string

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers import _base
from attnkit.layers import _kv_cache as kv_cache
from attnkit.layers import _transformer_options as options
from attnkit.layers._attention_axes import AttentionLayout
from attnkit.ops import attention as core_attention
from attnkit.ops import dispatch
from attnkit.ops import masks as masks_lib
from attnkit.ops.attention import IMPLEMENTATIONS
from attnkit.ops.masks import combine_masks
from attnkit.ops.softmax import masked_softmax

try:  # Keras has no public API to attach a mask to a tensor.
    from keras.src.backend.common.masking import set_keras_mask as _set_keras_mask
except ImportError:  # pragma: no cover
    _set_keras_mask = None


def _projection_equation(free_dims, bound_dims, output_dims):
    """EinsumDense equation and bias axes: (free, bound)·(bound, out) -> (free, out)."""
    letters = string.ascii_lowercase
    free = letters[:free_dims]
    bound = letters[free_dims : free_dims + bound_dims]
    out = letters[free_dims + bound_dims : free_dims + bound_dims + output_dims]
    return f"{free}{bound},{bound}{out}->{free}{out}", out


@keras.saving.register_keras_serializable(package="attnkit")
@options.document
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention with grouped-query heads and a key/value cache.

    Vaswani et al. 2017 (https://arxiv.org/abs/1706.03762); grouped-query
    attention from Ainslie et al. 2023 (https://arxiv.org/abs/2305.13245).
    Drop-in for `keras.layers.MultiHeadAttention`: the same constructor and
    call arguments, sublayers (`query`, `key`, `value`, `gate`,
    `attention_output`) and weight shapes, so
    `layer.set_weights(keras_layer.get_weights())` gives the same outputs.

    For query `x_q` (B, Tq, Dq) and key/value inputs `x_k`, `x_v` (B, Tv, ·):

    1. `q = x_q W_q` (B, Tq, H, Dk); `k = x_k W_k` (B, Tv, Hkv, Dk);
       `v = x_v W_v` (B, Tv, Hkv, Dv), each with a bias when `use_bias`.
    2. For every query head h, with key/value head `h // (H / Hkv)`:
       `weights = softmax(q kᵀ / sqrt(Dk))` over the visible keys (Masking).
    3. `o = weights · v` (B, Tq, H, Dv); with `use_gate`,
       `o = o ⊙ sigmoid(x_q W_g)` (Qiu et al. 2025).
    4. `output = o W_o` (B, Tq, *output_shape*), `output_shape` defaulting
       to Dq.

    `num_key_value_heads = Hkv` < H shares each key/value head among H / Hkv
    query heads (1 = multi-query attention); keys/values are never repeated
    in memory. With `attention_axes`, inputs `(B, ..., D)` attend over the
    given axes jointly (the others act as batch axes); causal and window masks
    then follow the row-major order of the attention positions.

    Incremental decoding (keras-hub style): `cache` holds the projected keys
    and values, shape `(B, 2, S, Hkv, Dk)` (needs `value_dim == key_dim`).
    With `cache_update_index=t`, the new keys/values of `key`/`value` are
    written at positions `t, t+1, ...` and the query tokens sit at those
    positions: they see the filled cache `[: t + Tnew]` (a one-token query at
    `t` sees `cache[: t + 1]`), and with `use_causal_mask` query `i` sees
    positions `<= t + i`. Without `cache_update_index` the cache is used as
    the keys and values as it is (`key`/`value` are not projected again).
    The call then returns `(output, cache)`.

    Masking: masks are boolean, True = may attend. The Keras masks of query,
    value and key (or `query_mask=`, `value_mask=`, `key_mask=` given
    explicitly, which take precedence), `attention_mask` (broadcastable to
    `(B, [H,] Tq, Tv)`), the causal mask (`use_causal_mask`, query `i` sees
    keys `j <= i`) and the sliding window (`|i - j| < sliding_window`) are
    combined with AND. A padded query (query mask False) gets zero weights
    and a zero attention output (the layer output is then the output bias)
    and the query mask passes on to the output; Keras instead gives such rows
    uniform weights. A query row with nothing to attend to gets zero weights,
    never NaN; every other row of the returned scores sums to 1. In cache
    mode, `value_mask`/`key_mask` describe the new tokens (their cache
    positions); mask older positions with `attention_mask` over `S`.

    {transformer_options}

    Args:
        num_heads: number of query heads H. Required.
        key_dim: size Dk of each query/key head. Required.
        value_dim: size Dv of each value head; `None` means `key_dim`.
            Defaults to `None`.
        dropout: dropout rate on the attention weights in training.
            Defaults to `0.0`.
        use_bias: whether the projections have biases. Defaults to `True`.
        output_shape: last axes of the output (int or tuple); `None` means
            the query's feature size. Defaults to `None`.
        attention_axes: input axes attended over; `None` means all axes but
            batch and features. Defaults to `None`.
        sliding_window: if set, query `i` sees keys `j` with
            `|i - j| < sliding_window`. Defaults to `None`.
        flash_attention: `True` requires the backend's fused kernel
            (`implementation="fused"`; no scores, no dropout), `False` forbids
            it, `None` follows `implementation` (or
            `keras.config.enable_flash_attention()`). Saved in the config.
            Defaults to `None`.
        kernel_initializer: initializer of the projection kernels.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of the biases. Defaults to `"zeros"`.
        kernel_regularizer: kernel regularizer. Defaults to `None`.
        bias_regularizer: bias regularizer. Defaults to `None`.
        activity_regularizer: activity regularizer of the projections.
            Defaults to `None`.
        kernel_constraint: kernel constraint. Defaults to `None`.
        bias_constraint: bias constraint. Defaults to `None`.
        use_gate: gate the attention output with a sigmoid of a query
            projection. Defaults to `False`.
        seed: integer seed for the dropout. Defaults to `None`.
        num_key_value_heads: key/value heads Hkv, dividing `num_heads`;
            `None` means `num_heads`. Defaults to `None`.
        implementation: passed to `attnkit.ops.attention`: `"auto"`,
            `"naive"`, `"chunked"` or `"fused"`. Defaults to `"auto"`.
        {transformer_args}

    Call arguments:
        query: `(B, Tq, Dq)` (or `(B, ..., Dq)` with `attention_axes`).
        value: `(B, Tv, Dv_in)`.
        key: `(B, Tv, Dk_in)`; `None` means `value`. Defaults to `None`.
        query_mask: boolean `(B, Tq)`. Defaults to the query's Keras mask.
        value_mask: boolean `(B, Tv)`. Defaults to the value's Keras mask.
        key_mask: boolean `(B, Tv)`. Defaults to the key's Keras mask.
        attention_mask: boolean, broadcastable to `(B, [H,] Tq, Tv)`.
            Defaults to `None`.
        return_attention_scores: also return the weights. Defaults to `False`.
        training: whether dropout is active. Defaults to `None`.
        use_causal_mask: query `i` may not attend to keys `j > i`.
            Defaults to `False`.
        cache: `(B, 2, S, Hkv, Dk)` projected keys and values.
            Defaults to `None`.
        cache_update_index: int or scalar integer tensor, where the new keys
            and values go in `cache`. Defaults to `None`.
        {transformer_call}

    Returns:
        The output `(B, Tq, *output_shape*)`; then, with
        `return_attention_scores`, the weights `(B, H, Tq, Tv)` (with
        `attention_axes`: `(B, <other axes>, H, <query attention axes>,
        <key attention axes>)`, Tv = S with a cache); then, with `cache`, the
        updated cache.

    Example:

    >>> import numpy as np
    >>> import attnkit
    >>> x = np.random.normal(size=(2, 6, 16)).astype("float32")
    >>> layer = attnkit.layers.MultiHeadAttention(
    ...     num_heads=4, key_dim=8, num_key_value_heads=2)
    >>> out, scores = layer(x, x, use_causal_mask=True,
    ...                     return_attention_scores=True)
    >>> tuple(out.shape), tuple(scores.shape)
    ((2, 6, 16), (2, 4, 6, 6))
    >>> streaming = attnkit.layers.MultiHeadAttention(
    ...     num_heads=4, key_dim=8, position_bias="alibi", logit_soft_cap=50.0,
    ...     sliding_window=4, attention_sinks=2, learned_sinks=True)
    >>> ids = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    >>> tuple(streaming(x, x, use_causal_mask=True, segment_ids=ids).shape)
    (2, 6, 16)

    References:
        - Vaswani et al. 2017, "Attention Is All You Need",
          https://arxiv.org/abs/1706.03762
        - Shazeer 2019, "Fast Transformer Decoding: One Write-Head is All You
          Need", https://arxiv.org/abs/1911.02150
        - Ainslie et al. 2023, "GQA: Training Generalized Multi-Query
          Transformer Models from Multi-Head Checkpoints",
          https://arxiv.org/abs/2305.13245
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        attention_axes=None,
        sliding_window=None,
        flash_attention=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        use_gate=False,
        seed=None,
        num_key_value_heads=None,
        implementation="auto",
        position_bias=None,
        t5_num_buckets=32,
        t5_max_distance=128,
        t5_bidirectional=None,
        logit_soft_cap=None,
        attention_sinks=None,
        learned_sinks=False,
        qk_norm=None,
        qk_norm_epsilon=1e-6,
        position_embedding=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True
        self._num_heads = _checks.positive_int(num_heads, "num_heads")
        self._key_dim = _checks.positive_int(key_dim, "key_dim")
        _checks.positive_int(value_dim, "value_dim", allow_none=True)
        self._value_dim = value_dim if value_dim is not None else key_dim
        self._dropout = _checks.rate(dropout)
        self._use_bias = _checks.boolean(use_bias, "use_bias")
        self._use_gate = _checks.boolean(use_gate, "use_gate")
        if output_shape is not None:
            shape = (output_shape,) if isinstance(output_shape, int) else output_shape
            if (
                not isinstance(shape, (list, tuple))
                or not shape
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
            ):
                raise ValueError(
                    "`output_shape` must be a positive int or a tuple of them. "
                    f"Received: output_shape={output_shape!r}"
                )
            output_shape = tuple(shape)
        self._output_shape = output_shape
        if isinstance(attention_axes, int) and not isinstance(attention_axes, bool):
            attention_axes = (attention_axes,)
        if attention_axes is not None and (
            not isinstance(attention_axes, (list, tuple))
            or not attention_axes
            or not all(isinstance(a, int) and not isinstance(a, bool) for a in attention_axes)
        ):
            raise ValueError(
                "`attention_axes` must be an int or a non-empty list/tuple of ints. "
                f"Received: attention_axes={attention_axes!r}"
            )
        self._attention_axes = None if attention_axes is None else tuple(attention_axes)
        self._sliding_window = _checks.positive_int(
            sliding_window, "sliding_window", allow_none=True
        )
        self._flash_attention = _checks.optional_bool(flash_attention, "flash_attention")
        self._num_key_value_heads = _checks.positive_int(
            num_key_value_heads, "num_key_value_heads", allow_none=True
        )
        kv_heads = num_heads if num_key_value_heads is None else num_key_value_heads
        if num_heads % kv_heads:
            raise ValueError(
                "`num_heads` must be a multiple of `num_key_value_heads`. "
                f"Received: num_heads={num_heads}, "
                f"num_key_value_heads={num_key_value_heads}"
            )
        _checks.one_of(implementation, "implementation", IMPLEMENTATIONS)
        if flash_attention is True and implementation not in ("auto", "fused"):
            raise ValueError(
                "`flash_attention=True` needs the fused kernel. "
                f"Received: implementation={implementation!r}"
            )
        if flash_attention is False and implementation == "fused":
            raise ValueError(
                "`flash_attention=False` forbids the fused kernel. "
                f"Received: implementation={implementation!r}"
            )
        if self._dropout > 0 and (flash_attention or implementation == "fused"):
            raise ValueError(
                "The fused kernel has no dropout on the attention weights; use "
                "implementation 'auto', 'naive' or 'chunked' (and no flash attention). "
                f"Received: dropout={dropout}, "
                f"implementation={implementation!r}, "
                f"flash_attention={flash_attention!r}"
            )
        self._implementation = implementation
        self._kernel_initializer = keras.initializers.get(kernel_initializer)
        self._bias_initializer = keras.initializers.get(bias_initializer)
        self._kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._bias_regularizer = keras.regularizers.get(bias_regularizer)
        self._activity_regularizer = keras.regularizers.get(activity_regularizer)
        self._kernel_constraint = keras.constraints.get(kernel_constraint)
        self._bias_constraint = keras.constraints.get(bias_constraint)
        self.seed = _checks.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed) if self._dropout > 0 else None
        self._init_transformer_options(
            position_bias=position_bias,
            t5_num_buckets=t5_num_buckets,
            t5_max_distance=t5_max_distance,
            t5_bidirectional=t5_bidirectional,
            logit_soft_cap=logit_soft_cap,
            attention_sinks=attention_sinks,
            learned_sinks=learned_sinks,
            qk_norm=qk_norm,
            qk_norm_epsilon=qk_norm_epsilon,
            position_embedding=position_embedding,
        )

    def _init_transformer_options(
        self,
        *,
        position_bias,
        t5_num_buckets,
        t5_max_distance,
        t5_bidirectional,
        logit_soft_cap,
        attention_sinks,
        learned_sinks,
        qk_norm,
        qk_norm_epsilon,
        position_embedding,
    ):
        self._position_bias = options.check_position_bias(position_bias)
        self._t5_num_buckets, self._t5_max_distance, self._t5_bidirectional = options.check_t5(
            t5_num_buckets, t5_max_distance, t5_bidirectional
        )
        self._logit_soft_cap = options.check_soft_cap(logit_soft_cap)
        self._attention_sinks = options.check_attention_sinks(attention_sinks, self._sliding_window)
        self._learned_sinks = _checks.boolean(learned_sinks, "learned_sinks")
        self._qk_norm, self._qk_norm_epsilon = options.check_qk_norm(qk_norm, qk_norm_epsilon)
        self._rotary_settings = options.check_position_embedding(position_embedding, self._key_dim)
        self._position_embedding = position_embedding
        needs_mods = [
            f"{name}={value!r}"
            for name, value in (
                ("position_bias", self._position_bias),
                ("logit_soft_cap", self._logit_soft_cap),
                ("attention_sinks", self._attention_sinks),
            )
            if value is not None
        ] + (["learned_sinks=True"] if self._learned_sinks else [])
        if needs_mods and (self._flash_attention or self._implementation == "fused"):
            raise ValueError(
                "The fused kernel has no score or mask functions and no sinks; use "
                "implementation 'auto', 'naive' or 'chunked' with these options. "
                f"Received: implementation={self._implementation!r}, "
                f"flash_attention={self._flash_attention!r}, {', '.join(needs_mods)}"
            )

    num_heads = property(lambda self: self._num_heads)
    key_dim = property(lambda self: self._key_dim)
    value_dim = property(lambda self: self._value_dim)
    dropout = property(lambda self: self._dropout)
    use_bias = property(lambda self: self._use_bias)
    attention_axes = property(lambda self: self._attention_axes)
    num_key_value_heads = property(lambda self: self._num_key_value_heads or self._num_heads)
    implementation = property(lambda self: self._implementation)
    flash_attention = property(lambda self: self._flash_attention)
    query_dense = property(lambda self: self._query_dense)
    key_dense = property(lambda self: self._key_dense)
    value_dense = property(lambda self: self._value_dense)
    output_dense = property(lambda self: self._output_dense)

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(
                "All dimensions of `value` and `key`, except the last one, must "
                f"be equal. Received: value_shape={value_shape} and "
                f"key_shape={key_shape}"
            )
        if len(query_shape) != len(value_shape) or len(query_shape) < 3:
            raise ValueError(
                "`query` and `value` must have the same rank, at least 3. "
                f"Received: query_shape={query_shape}, value_shape={value_shape}"
            )
        rank = len(query_shape)
        self._layout = AttentionLayout.from_axes(self._attention_axes, rank)
        heads, kv_heads = self._num_heads, self.num_key_value_heads

        # Created in Keras' order (query, key, gate, value, attention_output)
        # so that `set_weights(keras_layer.get_weights())` lines up.
        self._query_dense = self._projection(rank, [heads, self._key_dim], "query")
        self._query_dense.build(query_shape)
        self._key_dense = self._projection(rank, [kv_heads, self._key_dim], "key")
        self._key_dense.build(key_shape)
        if self._use_gate:
            self._gate_dense = self._projection(
                rank, [heads, self._value_dim], "gate", activation="sigmoid"
            )
            self._gate_dense.build(query_shape)
        self._value_dense = self._projection(rank, [kv_heads, self._value_dim], "value")
        self._value_dense.build(value_shape)
        out_dims = self._output_shape or (query_shape[-1],)
        equation, bias_axes = _projection_equation(rank - 1, 2, len(out_dims))
        self._output_dense = keras.layers.EinsumDense(
            equation,
            output_shape=[None] * (rank - 2) + list(out_dims),
            bias_axes=bias_axes if self._use_bias else None,
            name="attention_output",
            **self._sublayer_kwargs(),
        )
        self._output_dense.build((*query_shape[:-1], heads, self._value_dim))
        self._build_transformer_options()

    def _build_transformer_options(self):
        # After Keras' weights, so `set_weights(keras_layer.get_weights())`
        # still lines up when the options are off.
        self._t5_table = self._sinks = self._query_norm = self._key_norm = None
        if self._position_bias == "t5":
            self._t5_table = self.add_weight(
                name="relative_attention_bias",
                shape=(self._t5_num_buckets, self._num_heads),  # (num_buckets, H)
                initializer="zeros",
                dtype=self.dtype,
            )
        if self._learned_sinks:
            self._sinks = self.add_weight(
                name="sinks", shape=(self._num_heads,), initializer="zeros", dtype=self.dtype
            )
        if self._qk_norm is not None:
            self._query_norm = self.add_weight(
                name="query_norm", shape=(self._key_dim,), initializer="ones", dtype=self.dtype
            )
            self._key_norm = self.add_weight(
                name="key_norm", shape=(self._key_dim,), initializer="ones", dtype=self.dtype
            )

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        cache=None,
        cache_update_index=None,
        segment_ids=None,
        score_mod=None,
        mask_mod=None,
    ):
        key = value if key is None else key
        layout = self._layout
        self._check_masks(
            query, value, key, query_mask, value_mask, key_mask, attention_mask, cache
        )
        kv_cache.validate(
            cache,
            cache_update_index,
            kv_heads=self.num_key_value_heads,
            key_dim=self._key_dim,
            value_dim=self._value_dim,
            standard_layout=layout.standard,
            axes=self._attention_axes,
        )
        options.check_mod(score_mod, "score_mod")
        options.check_mod(mask_mod, "mask_mod")
        segment_ids = self._check_segment_ids(segment_ids, query, key, cache)
        # With a cache and an index t the query tokens sit at t, t + 1, ...
        index = 0 if cache_update_index is None else ops.cast(cache_update_index, "int32")
        gate = self._gate_dense(query) if self._use_gate else None  # (B, Tq, H, Dv)
        q = self._normalise(self._query_dense(query), self._query_norm)  # (B, Tq, H, Dk)
        if cache is None:
            k = self._normalise(self._key_dense(key), self._key_norm)  # (B, Tv, Hkv, Dk)
            v = self._value_dense(value)  # (B, Tv, Hkv, Dv)
        elif cache_update_index is None:
            k, v = kv_cache.read(cache)  # (B, S, Hkv, Dk): the cache as it is
        else:
            # The cache holds keys as the scores read them: normalised, rotated.
            new_keys = self._rotate(self._normalise(self._key_dense(key), self._key_norm), index)
            k, v, cache = kv_cache.update(cache, new_keys, self._value_dense(value), index)

        batch = ops.shape(query)[0]
        q, k, v = (layout.to_core(x) for x in (q, k, v))  # (B', T, H|Hkv, ·)
        q = self._rotate(q, index)
        if cache is None:
            k = self._rotate(k, 0)
        score_fn, score_params = options.score_mod(
            position_bias=self._position_bias,
            num_heads=self._num_heads,
            t5_settings=(self._t5_num_buckets, self._t5_max_distance, self._t5_bidirectional),
            t5_table=self._t5_table,
            causal=bool(use_causal_mask),
            user_score_mod=score_mod,
            soft_cap=self._logit_soft_cap,
            shift=index,
        )
        mask_fn = options.mask_mod(
            attention_sinks=self._attention_sinks,
            sliding_window=self._sliding_window,
            segment_ids=segment_ids,
            user_mask_mod=mask_mod,
            shift=index,
        )
        attention_mask, hook_kwargs = self._compute_attention_mask(
            query,
            key,
            q,
            k,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
            cache_update_index=None if cache is None else cache_update_index,
            mask_mod=mask_fn,
        )
        if self._own_hook():
            # The rest of the options reach the core as its arguments.
            if score_fn is not None:
                hook_kwargs["score_mod"] = score_fn
                hook_kwargs["score_mod_params"] = score_params
            if self._sinks is not None:
                hook_kwargs["sinks"] = self._sinks
        else:
            options.refuse_score_options(
                type(self), "_compute_attention", self._score_options(score_mod)
            )
        if type(self)._masked_softmax is not MultiHeadAttention._masked_softmax:
            options.refuse_score_options(
                type(self), "_masked_softmax", self._score_options(score_mod)
            )
        if return_attention_scores:  # passed only when asked: Keras' older overrides lack it
            hook_kwargs["return_attention_scores"] = True
        out, scores = self._compute_attention(q, k, v, attention_mask, training, **hook_kwargs)
        out = layout.from_core(out, query.shape, batch)  # (B, Tq, H, Dv)
        if gate is not None:
            out = out * gate
        output = self._output_dense(out)  # (B, Tq, *output_shape)
        if query_mask is not None and _set_keras_mask is not None:
            _set_keras_mask(output, ops.cast(query_mask, "bool"))
        outputs = [output]
        if return_attention_scores:
            outputs.append(layout.scores_from_core(scores, query.shape, key.shape, batch))
        if cache is not None:
            outputs.append(cache)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _own_hook(self):
        return type(self)._compute_attention is MultiHeadAttention._compute_attention

    def _score_options(self, score_mod=None):
        """The active options that change the logits, as ``name=value`` strings."""
        active = [
            f"{name}={value!r}"
            for name, value in (
                ("position_bias", self._position_bias),
                ("logit_soft_cap", self._logit_soft_cap),
            )
            if value is not None
        ]
        if self._learned_sinks:
            active.append("learned_sinks=True")
        if score_mod is not None:
            active.append(f"score_mod={score_mod!r:.80}")
        return active

    def _normalise(self, x, scale):
        """QK-norm of projected heads (B, T, H|Hkv, Dk), or ``x`` without it."""
        if self._qk_norm is None:
            return x
        return options.apply_qk_norm(x, scale, self._qk_norm, self._qk_norm_epsilon)

    def _rotate(self, x, offset):
        """Rotary embedding of (B, T, H|Hkv, Dk) heads at positions ``offset + t``."""
        if self._rotary_settings is None:
            return x
        return options.apply_rotary(x, self._rotary_settings, offset)

    def _check_segment_ids(self, segment_ids, query, key, cache):
        if segment_ids is None:
            return None
        if not self._layout.standard:
            raise ValueError(
                "`segment_ids` needs inputs (B, T, D) attended over axis 1. "
                f"Received: attention_axes={self._attention_axes}"
            )
        if cache is not None:
            return options.check_segment_ids(segment_ids, query.shape[0], cache.shape[2], "(B, S)")
        tq, tv = query.shape[1], key.shape[1]
        if isinstance(tq, int) and isinstance(tv, int) and tq != tv:
            raise ValueError(
                "`segment_ids` marks the documents of one packed sequence: it needs "
                f"self-attention (Tq == Tv) or a cache. Received: segment_ids with "
                f"query length {tq} and key length {tv}"
            )
        return options.check_segment_ids(segment_ids, query.shape[0], tv, "(B, T)")

    def _check_masks(
        self, query, value, key, query_mask, value_mask, key_mask, attention_mask, cache
    ):
        """ValueErrors naming the mask argument whose shape does not fit the inputs."""
        standard = self._layout.standard
        for mask, name, x, legend in (
            (query_mask, "query_mask", query, "(B, Tq)" if standard else "query.shape[:-1]"),
            (value_mask, "value_mask", value, "(B, Tv)" if standard else "value.shape[:-1]"),
            (key_mask, "key_mask", key, "(B, Tv)" if standard else "key.shape[:-1]"),
        ):
            _base.check_mask(mask, name, tuple(x.shape)[:-1], legend)
        if self._layout.standard:
            tv = key.shape[1] if cache is None else cache.shape[2]
            _base.check_attention_mask(
                attention_mask,
                "attention_mask",
                query.shape[0],
                self._num_heads,
                query.shape[1],
                tv,
            )

    def _compute_attention_mask(
        self,
        query,
        key,
        q,
        k,
        *,
        query_mask,
        value_mask,
        key_mask,
        attention_mask,
        use_causal_mask,
        cache_update_index,
        mask_mod=None,
    ):
        """The mask of the projected heads ``q`` (B', Tq, H, Dk), ``k`` (B', Tv, ·).

        Returns ``(mask, positions)``: ``mask`` bool (B', Tq, Tv) or (B', H,
        Tq, Tv), or None, from the padding masks, ``attention_mask`` and, where
        they cannot be handed to the core as arguments, the causal and window
        masks; ``positions`` the keyword arguments of ``_compute_attention``
        that carry the rest (``use_causal_mask``, ``sliding_window``), empty
        when a subclass overrides ``_compute_attention`` (it gets every
        constraint in ``attention_mask``, as in Keras). ``mask_mod`` (the
        layer's mask options, queries already at their positions) joins the
        keyword arguments, or is evaluated into the mask for such a subclass.
        With ``attention_sinks`` the window is part of ``mask_mod``.
        """
        window = None if self._attention_sinks is not None else self._sliding_window
        layout = self._layout
        tq, tv = ops.shape(q)[1], ops.shape(k)[1]
        if cache_update_index is not None:
            # Masks of the new tokens land at their cache positions.
            index = ops.cast(cache_update_index, "int32")
            value_mask, key_mask = (
                None if m is None else kv_cache.place_mask(m, index, k.shape[1])
                for m in (value_mask, key_mask)
            )
        mask = _base.padding_mask(
            layout.flat_padding(query_mask),
            [layout.flat_padding(value_mask), layout.flat_padding(key_mask)],
            heads_axis=True,
        )  # (B', 1, Tq, Tv)
        if attention_mask is not None:
            attention_mask = layout.attention_mask(
                attention_mask, ops.shape(query)[0], query.shape, key.shape
            )
            mask = combine_masks(mask, attention_mask)  # (B', H|1, Tq, Tv)
        if cache_update_index is not None:
            # The query tokens sit at positions index, index + 1, ...
            position = kv_cache.positions_mask(
                index,
                ops.shape(key)[1],
                tq,
                tv,
                causal=use_causal_mask,
                window=window,
            )
            mask, positions = combine_masks(mask, position[None, None]), {}
        elif not self._own_hook():
            position = _position_mask(q, k, bool(use_causal_mask), window)
            mask = combine_masks(mask, None if position is None else position[None, None])
            positions = {}
        else:
            positions = {"use_causal_mask": bool(use_causal_mask)}
            if window is not None:
                positions["sliding_window"] = window
        if mask_mod is not None:
            if self._own_hook():
                positions["mask_mod"] = mask_mod
            else:  # (B'|1, H|1, Tq, Tv)
                evaluated = options.evaluate_mask_mod(
                    mask_mod, ops.shape(q)[0], self._num_heads, tq, tv
                )
                mask = combine_masks(mask, evaluated)
        if mask is not None and mask.shape[1] == 1:
            mask = mask[:, 0]  # (B', Tq, Tv), Keras' layout when no head is special
        return mask, positions

    def _compute_attention(
        self,
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=False,
        sliding_window=None,
        score_mod=None,
        score_mod_params=(),
        mask_mod=None,
        sinks=None,
    ):
        """Attention of the projected heads: Keras' hook, for subclasses to override.

        ``query`` (B, Tq, H, Dk), ``key`` (B, Tv, Hkv, Dk), ``value`` (B, Tv,
        Hkv, Dv) (with ``attention_axes``: the attended axes flattened into T,
        the other axes into B); ``attention_mask`` bool, broadcastable to (B,
        [H,] Tq, Tv), True = may attend. ``use_causal_mask`` and
        ``sliding_window`` (top-left aligned) are given only by this class's
        own ``call``, which otherwise folds them into ``attention_mask``.
        Returns ``(attention_output (B, Tq, H, Dv), attention_scores (B, H, Tq,
        Tv) or None)``. A subclass that overrides ``_masked_softmax`` gets its
        softmax applied to explicit scores. ``score_mod``, ``score_mod_params``,
        ``mask_mod`` and ``sinks`` (the transformer options, in the core's
        convention with the queries at their absolute positions) are likewise
        given only by this class's own ``call``.
        """
        dropout = self._dropout if training and self._dropout > 0 else 0.0
        if type(self)._masked_softmax is not MultiHeadAttention._masked_softmax:
            position = _position_mask(query, key, use_causal_mask, sliding_window)
            mask = combine_masks(attention_mask, None if position is None else position[None])
            if mask_mod is not None:
                tq, tv = ops.shape(query)[1], ops.shape(key)[1]
                batch = ops.shape(query)[0]
                evaluated = options.evaluate_mask_mod(mask_mod, batch, self._num_heads, tq, tv)
                if mask is not None and len(mask.shape) == 3:
                    mask = mask[:, None]  # (B, 1, Tq, Tv)
                mask = combine_masks(mask, evaluated)  # (B, H|1, Tq, Tv)
            return self._explicit_attention(query, key, value, mask, dropout)
        result = core_attention(
            query,
            key,
            value,
            score="dot",
            scale=1.0 / math.sqrt(self._key_dim),
            mask=attention_mask,
            causal=bool(use_causal_mask),
            alignment="top_left",
            window=sliding_window,
            score_mod=score_mod,
            score_mod_params=score_mod_params,
            mask_mod=mask_mod,
            sinks=sinks,
            dropout=dropout,
            training=dropout > 0,
            seed=self.seed_generator,
            return_weights=return_attention_scores,
            implementation=dispatch.layer_implementation(
                self._implementation,
                self._flash_attention,
                query.shape[1],
                key.shape[1],
                return_attention_scores,
                dropout,
            ),
        )
        return result if return_attention_scores else (result, None)

    def _explicit_attention(self, query, key, value, attention_mask, dropout):
        """Keras' computation: scores -> ``self._masked_softmax`` -> dropout -> values."""
        batch, tq, heads, dk = ops.shape(query)
        kv_heads = key.shape[2]
        query = query * ops.cast(1.0 / math.sqrt(self._key_dim), query.dtype)
        q = ops.reshape(query, (batch, tq, kv_heads, heads // kv_heads, dk))
        scores = ops.einsum("bqhgd,bkhd->bhgqk", q, key)  # (B, Hkv, G, Tq, Tv)
        scores = ops.reshape(scores, (batch, heads, tq, ops.shape(key)[1]))  # (B, H, Tq, Tv)
        weights = self._masked_softmax(scores, attention_mask)
        dropped = weights
        if dropout > 0:
            dropped = keras.random.dropout(weights, dropout, seed=self.seed_generator)
        dropped = ops.reshape(dropped, (batch, kv_heads, heads // kv_heads, tq, -1))
        out = ops.einsum("bhgqk,bkhd->bqhgd", dropped, ops.cast(value, dropped.dtype))
        return ops.reshape(out, (batch, tq, heads, value.shape[-1])), weights

    def _masked_softmax(self, attention_scores, attention_mask=None):
        """Keras' hook: softmax of ``attention_scores`` (B, H, Tq, Tv) where
        ``attention_mask`` (broadcastable to (B, [H,] Tq, Tv)) is True.

        Computed in at least float32 and cast back; a row with nothing to attend
        to gets zero weights (Keras gives it uniform weights).
        """
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "bool")
            for _ in range(len(attention_scores.shape) - len(attention_mask.shape)):
                attention_mask = ops.expand_dims(attention_mask, axis=-3)  # the head axis
        weights = masked_softmax(attention_scores, attention_mask, axis=-1)
        return ops.cast(weights, attention_scores.dtype)

    def _projection(self, rank, output_dims, name, activation=None):
        equation, bias_axes = _projection_equation(rank - 1, 1, 2)
        dense = keras.layers.EinsumDense(
            equation,
            output_shape=[None] * (rank - 2) + list(output_dims),
            bias_axes=bias_axes if self._use_bias else None,
            activation=activation,
            name=name,
            **self._sublayer_kwargs(),
        )
        # The inputs' Keras masks are this layer's business; the projections
        # pass them through instead of warning that they destroy them.
        dense.supports_masking = True
        return dense

    def _sublayer_kwargs(self):
        # Fresh initializer instances: a shared seeded one would repeat values.
        def clone(init):
            return init.__class__.from_config(init.get_config())

        return dict(
            kernel_initializer=clone(self._kernel_initializer),
            bias_initializer=clone(self._bias_initializer),
            kernel_regularizer=self._kernel_regularizer,
            bias_regularizer=self._bias_regularizer,
            activity_regularizer=self._activity_regularizer,
            kernel_constraint=self._kernel_constraint,
            bias_constraint=self._bias_constraint,
            dtype=self.dtype_policy,
        )

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        for name, shape in (
            ("query_shape", query_shape),
            ("value_shape", value_shape),
            ("key_shape", key_shape),
        ):
            if not isinstance(shape, (list, tuple)):
                raise ValueError(f"`{name}` must be a shape tuple. Received: {name}={shape!r}")
        if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(
                "All dimensions of `value` and `key`, except the last one, must "
                f"be equal. Received: value_shape={value_shape} and "
                f"key_shape={key_shape}"
            )
        if self._output_shape:
            return tuple(query_shape[:-1]) + self._output_shape
        return tuple(query_shape)

    def compute_output_spec(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        cache=None,
        cache_update_index=None,
        segment_ids=None,
        score_mod=None,
        mask_mod=None,
    ):
        key = value if key is None else key
        output = keras.KerasTensor(
            self.compute_output_shape(query.shape, value.shape, key.shape),
            dtype=self.compute_dtype,
        )
        outputs = [output]
        if return_attention_scores:
            layout = AttentionLayout.from_axes(self._attention_axes, len(query.shape))
            others, attn = layout.others, layout.attn
            if cache is not None:
                key_attn = [cache.shape[2]]
            else:
                key_attn = [key.shape[a] for a in attn]
            scores_shape = (
                query.shape[0],
                *[query.shape[a] for a in others],
                self._num_heads,
                *[query.shape[a] for a in attn],
                *key_attn,
            )
            outputs.append(keras.KerasTensor(scores_shape, dtype=self.compute_dtype))
        if cache is not None:
            outputs.append(keras.KerasTensor(cache.shape, dtype=cache.dtype))
        if query_mask is not None and _set_keras_mask is not None:
            # An explicit query mask passes on (an implicit one is set by Keras).
            _set_keras_mask(output, query_mask)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self._num_heads,
            "key_dim": self._key_dim,
            "value_dim": self._value_dim,
            "dropout": self._dropout,
            "use_bias": self._use_bias,
            "use_gate": self._use_gate,
            "output_shape": self._output_shape,
            "attention_axes": self._attention_axes,
            "sliding_window": self._sliding_window,
            "flash_attention": self._flash_attention,
            "kernel_initializer": keras.initializers.serialize(self._kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self._bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self._kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self._bias_regularizer),
            "activity_regularizer": keras.regularizers.serialize(self._activity_regularizer),
            "kernel_constraint": keras.constraints.serialize(self._kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self._bias_constraint),
            "seed": self.seed,
            "num_key_value_heads": self._num_key_value_heads,
            "implementation": self._implementation,
            "position_bias": self._position_bias,
            "t5_num_buckets": self._t5_num_buckets,
            "t5_max_distance": self._t5_max_distance,
            "t5_bidirectional": self._t5_bidirectional,
            "logit_soft_cap": self._logit_soft_cap,
            "attention_sinks": self._attention_sinks,
            "learned_sinks": self._learned_sinks,
            "qk_norm": self._qk_norm,
            "qk_norm_epsilon": self._qk_norm_epsilon,
            "position_embedding": self._position_embedding,
        }


def _position_mask(query, key, causal, window):
    """(Tq, Tv) top-left causal/window mask of (B, Tq, ...) and (B, Tv, ...), or None."""
    return masks_lib.aligned_mask(
        ops.shape(query)[1], ops.shape(key)[1], causal=causal, window=window, alignment="top_left"
    )
