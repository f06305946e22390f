"""Grouped-query attention: a drop-in for ``keras.layers.GroupQueryAttention``."""

from __future__ import annotations

import keras

from attnkit import _checks
from attnkit.layers import _transformer_options as options
from attnkit.layers.multi_head_attention import MultiHeadAttention

# MultiHeadAttention's config keys that GroupedQueryAttention spells its own way
# or fixes (a (B, T, D) layout, value heads as wide as key heads, D_out = Dq).
_MHA_ONLY = ("num_heads", "key_dim", "value_dim", "output_shape", "attention_axes")


@keras.saving.register_keras_serializable(package="attnkit")
@options.document
class GroupedQueryAttention(MultiHeadAttention):
    """Grouped-query attention with Keras' `GroupQueryAttention` interface.

    Ainslie et al. 2023 (https://arxiv.org/abs/2305.13245). Drop-in for
    `keras.layers.GroupQueryAttention` (Keras 3.15): the same constructor and
    call arguments, sublayers (`query`, `key`, `gate`, `value`,
    `attention_output`, created in that order) and weight shapes, so
    `layer.set_weights(keras_layer.get_weights())` gives the same outputs.
    It is `attnkit.layers.MultiHeadAttention` with `num_heads =
    num_query_heads`, `key_dim = value_dim = head_dim`, and inherits its
    implementation choice (naive, O(N)-memory chunked, fused) and key/value
    cache. Exported also as `GroupQueryAttention`, Keras' spelling.

    For query `x_q` (B, Tq, Dq) and key/value inputs `x_k`, `x_v` (B, Tv, ·),
    with H = `num_query_heads`, Hkv = `num_key_value_heads`, D = `head_dim`:

    1. `q = x_q W_q` (B, Tq, H, D); `k = x_k W_k`, `v = x_v W_v` (B, Tv, Hkv, D).
    2. Query head h reads key/value head `h // (H / Hkv)`:
       `weights = softmax(q kᵀ / sqrt(D))` over the visible keys (Masking).
       Keras repeats k and v H / Hkv times; attnkit never materialises the
       repeats.
    3. `o = weights · v` (B, Tq, H, D); with `use_gate`,
       `o = o ⊙ sigmoid(x_q W_g)` (Qiu et al. 2025).
    4. `output = o W_o` (B, Tq, Dq).

    Masking: as `attnkit.layers.MultiHeadAttention`: the Keras masks of query,
    value and key (or `query_mask=`, `value_mask=`, `key_mask=`),
    `attention_mask` (broadcastable to `(B, [H,] Tq, Tv)`), the causal mask
    (top-left: query `i` sees keys `j <= i`) and the sliding window
    (`|i - j| < sliding_window`) are combined with AND. A padded query gets
    zero weights and a zero attention output (Keras gives it uniform weights);
    a row with nothing to attend to gets zero weights, never NaN. With a
    `cache` and `cache_update_index=t` the query tokens sit at positions
    `t, t + 1, ...` of the cache (bottom-right alignment of the new tokens).

    {transformer_options}

    The transformer options are `MultiHeadAttention`'s, passed on to it (see
    its Args); `qk_norm` and `position_embedding` act on every head of size
    `head_dim`.

    Args:
        head_dim: size D of every query, key and value head. Required.
        num_query_heads: number of query heads H. Required.
        num_key_value_heads: number of key/value heads Hkv, dividing H
            (1 = multi-query attention, H = multi-head attention). Required.
        dropout: dropout rate on the attention weights in training.
            Defaults to `0.0`.
        use_bias: whether the projections have biases. Defaults to `True`.
        sliding_window: if set, query `i` sees keys `j` with
            `|i - j| < sliding_window`. Defaults to `None`.
        flash_attention: `True` requires the backend's fused kernel, `False`
            forbids it, `None` follows `implementation` (or
            `keras.config.enable_flash_attention()`). Defaults to `None`.
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
        implementation: `"auto"`, `"naive"`, `"chunked"` (O(N) memory) or
            `"fused"`, as in `attnkit.ops.attention`. Defaults to `"auto"`.
        {transformer_args}

    Call arguments:
        query: `(B, Tq, Dq)`.
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
        cache: `(B, 2, S, Hkv, D)` projected keys and values (attnkit's
            extra). Defaults to `None`.
        cache_update_index: where the new keys and values go in `cache`.
            Defaults to `None`.
        {transformer_call}

    Returns:
        The output `(B, Tq, Dq)`; then, with `return_attention_scores`, the
        weights `(B, H, Tq, Tv)`; then, with `cache`, the updated cache.

    Example:

    >>> import numpy as np
    >>> import attnkit
    >>> x = np.random.normal(size=(2, 6, 16)).astype("float32")
    >>> layer = attnkit.layers.GroupedQueryAttention(
    ...     head_dim=8, num_query_heads=4, num_key_value_heads=2)
    >>> out, scores = layer(x, x, use_causal_mask=True,
    ...                     return_attention_scores=True)
    >>> tuple(out.shape), tuple(scores.shape)
    ((2, 6, 16), (2, 4, 6, 6))

    References:
        - Ainslie et al. 2023, "GQA: Training Generalized Multi-Query
          Transformer Models from Multi-Head Checkpoints",
          https://arxiv.org/abs/2305.13245
        - Shazeer 2019, "Fast Transformer Decoding: One Write-Head is All You
          Need", https://arxiv.org/abs/1911.02150
    """

    def __init__(
        self,
        head_dim,
        num_query_heads,
        num_key_value_heads,
        dropout=0.0,
        use_bias=True,
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
        implementation="auto",
        **kwargs,
    ):
        # Checked here under this layer's own argument names (the parent
        # would name `num_heads` and `key_dim`).
        _checks.positive_int(head_dim, "head_dim")
        _checks.positive_int(num_query_heads, "num_query_heads")
        _checks.positive_int(num_key_value_heads, "num_key_value_heads")
        if num_query_heads % num_key_value_heads:
            raise ValueError(
                "`num_query_heads` must be divisible by `num_key_value_heads`. "
                f"Received: num_query_heads={num_query_heads}, "
                f"num_key_value_heads={num_key_value_heads}"
            )
        super().__init__(
            num_heads=num_query_heads,
            key_dim=head_dim,
            dropout=dropout,
            use_bias=use_bias,
            sliding_window=sliding_window,
            flash_attention=flash_attention,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            use_gate=use_gate,
            seed=seed,
            num_key_value_heads=num_key_value_heads,
            implementation=implementation,
            **kwargs,
        )

    # Keras' attribute names.
    head_dim = property(lambda self: self._key_dim)
    num_query_heads = property(lambda self: self._num_heads)
    num_repeats = property(lambda self: self._num_heads // self.num_key_value_heads)
    use_gate = property(lambda self: self._use_gate)
    sliding_window = property(lambda self: self._sliding_window)
    kernel_initializer = property(lambda self: self._kernel_initializer)
    bias_initializer = property(lambda self: self._bias_initializer)

    def build(self, query_shape, value_shape, key_shape=None):
        if len(query_shape) != 3:
            raise ValueError(
                "`query` must have rank 3, (batch, target length, features). "
                f"Received: query_shape={tuple(query_shape)}"
            )
        super().build(query_shape, value_shape, key_shape)

    def get_config(self):
        config = super().get_config()
        for key in _MHA_ONLY:
            config.pop(key)
        return {
            **config,
            "head_dim": self._key_dim,
            "num_query_heads": self._num_heads,
            "num_key_value_heads": self.num_key_value_heads,
        }


GroupQueryAttention = GroupedQueryAttention
