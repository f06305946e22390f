"""Luong-style attention: a drop-in superset of ``keras.layers.Attention``."""

from __future__ import annotations

import math
import warnings

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers import _base
from attnkit.layers._query_value import QueryValueMixin
from attnkit.ops import attention as core_attention
from attnkit.ops import masks as masks_lib
from attnkit.ops.masks import combine_masks
from attnkit.ops.scores import additive_score, dot_score, l2_normalize
from attnkit.ops.softmax import masked_softmax

SCORE_MODES = ("dot", "scaled_dot", "general", "cosine", "concat")


@keras.saving.register_keras_serializable(package="attnkit")
class Attention(QueryValueMixin, keras.layers.Layer):
    """Luong-style attention over a query and a value sequence.

    Luong, Pham and Manning 2015 (https://arxiv.org/abs/1508.04025), with the
    scaled dot product of Vaswani et al. 2017 (https://arxiv.org/abs/1706.03762).
    Drop-in for `keras.layers.Attention`: same arguments, weight names
    (`scale`, `concat_score_weight`) and outputs, plus the score modes
    `"scaled_dot"`, `"general"` and `"cosine"` and a sliding window.

    The computation, for query `q` (B, Tq, Dq), value `v` (B, Tv, Dv) and key
    `k` (B, Tv, Dk) (the value when no key is given):

    1. scores (B, Tq, Tv), depending on `score_mode`:
       - `"dot"`: `qᵀk`
       - `"scaled_dot"`: `qᵀk / sqrt(Dk)`
       - `"general"`: `qᵀ W k` with a learned `kernel` W (Dq, Dk)
       - `"cosine"`: `(q/|q|)ᵀ(k/|k|)`
       - `"concat"`: `c · Σ_d tanh(q_d + k_d)`, with the learned scalar
         `concat_score_weight` c (Keras' meaning of "concat").
       With `use_scale`, a learned scalar `scale` multiplies the scores
       (for `"concat"`, it multiplies `q + k` inside the tanh, as in Keras).
    2. weights = softmax(scores) over the visible keys (see Masking).
    3. output = weights · v, shape (B, Tq, Dv).

    Any number of leading batch axes is accepted: `(..., Tq, Dq)` with
    `(..., Tv, Dv)` gives `(..., Tq, Dv)`.

    Masking: masks are boolean, True = may attend. The Keras masks of the
    inputs (or `mask=[query_mask, value_mask(, key_mask)]`), the causal mask
    (`use_causal_mask`, query `i` sees keys `j <= i`) and the sliding window
    (`|i - j| < sliding_window`) are combined with AND. A key masked out in
    the value mask or in the key mask is never attended (Keras ignores a key
    mask; attnkit uses it). A padded query (query mask False) gets zero
    weights and a zero output, and the query mask passes on to the output.
    A query row with nothing to attend to gets zero weights and a zero
    output, never NaN (Keras returns uniform weights there); every other row
    of the returned scores sums to 1.

    Args:
        use_scale: whether to learn a scalar `scale` multiplying the scores.
            Defaults to `False`.
        score_mode: one of `"dot"`, `"scaled_dot"`, `"general"`, `"cosine"`,
            `"concat"`. Defaults to `"dot"`.
        dropout: fraction of the attention weights dropped in training.
            Defaults to `0.0`.
        seed: integer seed for the dropout. Defaults to `None`.
        sliding_window: if set, query `i` only attends to keys `j` with
            `|i - j| < sliding_window` (with `use_causal_mask`, the
            `sliding_window` most recent keys). Defaults to `None`.
        **kwargs: base layer arguments (`name`, `dtype`, ...). The legacy
            keyword `causal=True` is accepted with a `DeprecationWarning` and
            makes `use_causal_mask` default to `True`.

    Call arguments:
        inputs: list `[query, value]` or `[query, value, key]`: query
            `(..., Tq, Dq)`, value `(..., Tv, Dv)`, key `(..., Tv, Dk)`.
        mask: list `[query_mask, value_mask]` or
            `[query_mask, value_mask, key_mask]` of boolean `(..., Tq)` /
            `(..., Tv)` masks; entries may be `None`. Defaults to the Keras
            masks of the inputs.
        training: whether dropout is active. Defaults to `None`.
        return_attention_scores: also return the attention weights.
            Defaults to `False`.
        use_causal_mask: query `i` may not attend to keys `j > i`.
            Defaults to `False`.

    Returns:
        The output `(..., Tq, Dv)`, and with `return_attention_scores` the
        weights `(..., Tq, Tv)` after masking and softmax, taken before
        dropout so that they always sum to 1 (Keras returns them after
        dropout).

    Example:

    >>> import numpy as np
    >>> import attnkit
    >>> query = np.random.normal(size=(2, 3, 8)).astype("float32")
    >>> value = np.random.normal(size=(2, 5, 8)).astype("float32")
    >>> layer = attnkit.layers.Attention(score_mode="scaled_dot")
    >>> out, scores = layer([query, value], return_attention_scores=True)
    >>> tuple(out.shape), tuple(scores.shape)
    ((2, 3, 8), (2, 3, 5))

    References:
        - Luong, Pham, Manning 2015, "Effective Approaches to Attention-based
          Neural Machine Translation", https://arxiv.org/abs/1508.04025
        - Vaswani et al. 2017, "Attention Is All You Need",
          https://arxiv.org/abs/1706.03762
    """

    def __init__(
        self,
        use_scale=False,
        score_mode="dot",
        dropout=0.0,
        seed=None,
        sliding_window=None,
        **kwargs,
    ):
        causal = kwargs.pop("causal", None)
        super().__init__(**kwargs)
        self.use_scale = _checks.boolean(use_scale, "use_scale")
        self.score_mode = _checks.one_of(score_mode, "score_mode", SCORE_MODES)
        self.dropout = _checks.rate(dropout)
        self.seed = _checks.seed(seed)
        self.sliding_window = _checks.positive_int(
            sliding_window, "sliding_window", allow_none=True
        )
        if causal is not None:
            _checks.boolean(causal, "causal")
            warnings.warn(
                "The `causal` argument of Attention is deprecated; pass "
                "`use_causal_mask=True` when calling the layer instead.",
                DeprecationWarning,
                stacklevel=2,
            )
        self.causal = bool(causal)
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout > 0 else None
        self.supports_masking = True

    def build(self, input_shape):
        self._validate_inputs(input_shape)
        self.scale = None
        self.concat_score_weight = None
        if self.use_scale:
            self.scale = self.add_weight(
                name="scale", shape=(), initializer="ones", dtype=self.dtype
            )
        if self.score_mode == "concat":
            self.concat_score_weight = self.add_weight(
                name="concat_score_weight",
                shape=(),
                initializer="ones",
                dtype=self.dtype,
            )
        query_dim = input_shape[0][-1]
        key_dim = input_shape[2 if len(input_shape) > 2 else 1][-1]
        if self.score_mode != "general" and query_dim != key_dim:
            raise ValueError(
                f"score_mode={self.score_mode!r} needs query and key of the same "
                "feature size (score_mode='general' projects between sizes). "
                f"Received: query.shape[-1]={query_dim}, key.shape[-1]={key_dim}"
            )
        if self.score_mode == "general":
            self.kernel = self.add_weight(
                name="kernel",
                shape=(query_dim, key_dim),
                initializer="glorot_uniform",
                dtype=self.dtype,
            )

    def call(
        self,
        inputs,
        mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=False,
    ):
        self._validate_inputs(inputs, mask)
        (query, value, key), (query_mask, value_mask, key_mask) = self._unpack_inputs(inputs, mask)
        causal = bool(use_causal_mask or self.causal)

        # Leading batch axes are folded into one: (..., T, D) -> (B, T, D).
        batch_shape = ops.shape(query)[:-2]
        q3, k3, v3 = (self._flatten_batch(x, 2) for x in (query, key, value))
        query_mask, value_mask, key_mask = (
            self._flatten_batch(m, 1) for m in (query_mask, value_mask, key_mask)
        )
        if self._overrides("_calculate_score_mask", "_apply_scores"):
            out, weights = self._attend_with_hooks(
                q3, k3, v3, query_mask, combine_masks(value_mask, key_mask), causal, training
            )
        else:
            out, weights = self._attend(
                q3,
                k3,
                v3,
                query_mask,
                value_mask,
                key_mask,
                causal,
                training,
                return_attention_scores,
            )
        tq, tv = ops.shape(q3)[1], ops.shape(k3)[1]
        out = ops.reshape(out, (*batch_shape, tq, ops.shape(v3)[-1]))  # (..., Tq, Dv)
        if return_attention_scores:
            return out, ops.reshape(weights, (*batch_shape, tq, tv))  # (..., Tq, Tv)
        return out

    def _attend(
        self, query, key, value, query_mask, value_mask, key_mask, causal, training, return_weights
    ):
        """The attention core's path: O(N) memory and the fused kernels where they apply."""
        pad = _base.padding_mask(query_mask, [value_mask, key_mask])  # (B, Tq, Tv)
        if self._overrides("_calculate_scores") or self.score_mode == "concat":
            # The core evaluates the score hook itself, block by block on long inputs.
            score = self._calculate_scores
        else:
            # A dot product of transformed operands: the core's fastest paths.
            (query, key), score = self._dot_operands(query, key), "dot"
        dropout_active = bool(training) and self.dropout > 0
        result = core_attention(
            query,
            key,
            value,
            score=score,
            mask=pad,
            causal=causal,
            alignment="top_left",
            window=self.sliding_window,
            scale=1.0,
            dropout=self.dropout if dropout_active else 0.0,
            training=dropout_active,
            seed=self.seed_generator,
            return_weights=return_weights,
        )
        return result if return_weights else (result, None)

    def _attend_with_hooks(self, query, key, value, query_mask, v_mask, causal, training):
        """Keras' path, for subclasses that override the mask or apply hooks:
        scores -> ``_calculate_score_mask`` -> ``_apply_scores``."""
        scores = self._calculate_scores(query, key)  # (B, Tq, Tv)
        scores_mask = self._calculate_score_mask(scores, v_mask, causal)
        if query_mask is not None:
            # A padded query gets zero weights (Keras gives it a softmax row).
            scores_mask = combine_masks(scores_mask, ops.cast(query_mask, "bool")[:, :, None])
        out, weights = self._apply_scores(scores, value, scores_mask, training=bool(training))
        if query_mask is not None:
            out = ops.where(ops.cast(query_mask, "bool")[:, :, None], out, ops.zeros_like(out))
        return out, weights

    def _calculate_scores(self, query, key):
        """Keras' score hook: ``query`` (..., Tq, Dq), ``key`` (..., Tv, Dk) ->
        scores (..., Tq, Tv).

        The attention core calls it with any leading axes, on blocks of queries
        and keys for long inputs, so an override must score (query, key) pairs
        independently (every score of Keras and attnkit does).
        """
        query, key = ops.convert_to_tensor(query), ops.convert_to_tensor(key)
        if self.score_mode == "concat":
            # c · Σ_d tanh(s·(q + k)_d) = additive_score(s·q, s·k, v = c·1).
            if self.use_scale:
                scale = ops.cast(self.scale, query.dtype)
                query, key = query * scale, key * scale
            weight = ops.cast(self.concat_score_weight, query.dtype)
            v = ops.ones((query.shape[-1],), dtype=query.dtype) * weight
            return additive_score(query, key, v)
        return dot_score(*self._dot_operands(query, key))

    def _dot_operands(self, query, key):
        """(query', key') whose dot product is the score of a dot-like mode.

        The score's own factors (1/sqrt(D), a learned scale, Luong's kernel, the
        normalisation) go into the (Tq, D) query rather than the (Tq, Tv) scores.
        """
        mode = self.score_mode
        factor = None
        if mode == "scaled_dot":
            factor = ops.cast(1.0 / math.sqrt(key.shape[-1]), query.dtype)
        if self.use_scale:
            scale = ops.cast(self.scale, query.dtype)
            factor = scale if factor is None else factor * scale
        if mode == "general":
            query = ops.matmul(query, ops.cast(self.kernel, query.dtype))  # (B, Tq, Dk)
        elif mode == "cosine":
            # Normalised in at least float32 (a zero or tiny vector stays finite),
            # then back to the compute dtype: the unit vectors fit any precision.
            query = ops.cast(l2_normalize(query), query.dtype)
            key = ops.cast(l2_normalize(key), key.dtype)
        if factor is not None:
            query = query * factor
        return query, key

    def _calculate_score_mask(self, scores, v_mask, use_causal_mask):
        """Keras' mask hook: the bool mask (B|1, Tq, Tv) of ``scores`` (B, Tq, Tv)
        from the key mask ``v_mask`` (B, Tv), the causal mask and the sliding
        window (top-left aligned), or None."""
        mask = None if v_mask is None else ops.cast(v_mask, "bool")[:, None, :]  # (B, 1, Tv)
        shape = ops.shape(scores)
        position = masks_lib.aligned_mask(
            shape[-2],
            shape[-1],
            causal=bool(use_causal_mask),
            window=self.sliding_window,
            alignment="top_left",
        )  # (Tq, Tv) or None
        return combine_masks(mask, None if position is None else position[None])  # (B|1, Tq, Tv)

    def _apply_scores(self, scores, value, scores_mask=None, training=False):
        """Keras' apply hook: masked softmax of ``scores`` (B, Tq, Tv), dropout,
        then the weighted sum of ``value`` (B, Tv, Dv).

        Returns ``(output (B, Tq, Dv), weights (B, Tq, Tv))``, the weights before
        dropout; a row with nothing to attend to gets zero weights (Keras gives
        it uniform weights).
        """
        if scores_mask is not None and len(scores_mask.shape) == 2:
            scores_mask = ops.expand_dims(scores_mask, -2)  # (B, 1, Tv)
        weights = ops.cast(masked_softmax(scores, scores_mask), scores.dtype)
        dropped = weights
        if training and self.dropout > 0:
            dropped = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        return ops.matmul(dropped, ops.cast(value, dropped.dtype)), weights

    def _overrides(self, *hooks):
        """Whether a subclass replaces one of Attention's hooks."""
        return any(getattr(type(self), h) is not getattr(Attention, h) for h in hooks)

    @staticmethod
    def _flatten_batch(x, trailing):
        """(..., *trailing axes) -> (B, *trailing axes); None stays None."""
        if x is None:
            return None
        x = ops.convert_to_tensor(x)
        if len(x.shape) == trailing + 1:
            return x
        shape = tuple(x.shape)[-trailing:]
        return ops.reshape(x, (-1, *shape))

    def get_config(self):
        config = {
            **super().get_config(),
            "use_scale": self.use_scale,
            "score_mode": self.score_mode,
            "dropout": self.dropout,
            "seed": self.seed,
            "sliding_window": self.sliding_window,
        }
        if self.causal:
            config["causal"] = True
        return config
