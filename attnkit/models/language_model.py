"""A small GPT-style decoder-only language model with a key/value cache.

``LanguageModel`` (Radford et al. 2018/2019; the layout of nanoGPT with the
attention of Llama/Mistral):

1. `h_0 = E[x]` (B, T, C), plus a learned position embedding `P[t]` when
   ``position_embedding="learned"``;
2. N pre-norm blocks, each
   `h = h + GQA(LN(h))` (causal grouped-query self-attention,
   `attnkit.layers.GroupedQueryAttention`, optionally within a sliding
   window) and `h = h + W_2 gelu(W_1 LN(h))`;
3. `logits = LN(h) Eᵀ` with tied embeddings, else `LN(h) W_out`.

Positions: ``"rotary"`` asks the attention layers for rotary embeddings
(``GroupedQueryAttention(position_embedding="rotary")``, Su et al. 2021);
``"learned"`` adds a trained (max_length, C) table to the token embeddings;
``None`` uses no positions at all (a causal model can still tell them apart).

Incremental decoding: ``call_with_cache(tokens, cache, index)`` runs the
tokens at positions ``index, index + 1, ...`` through every layer's slice of
one stacked cache `(B, N, 2, S, Hkv, D)` (each layer's `(B, 2, S, Hkv, D)`,
preallocated to S = ``max_length``), and ``generate`` decodes with it or, with
``use_cache=False``, recomputes the whole prefix at each step. The per-step
functions are compiled where the backend allows it (``jax.jit`` on JAX,
``tf.function`` on TensorFlow; PyTorch runs them eagerly under
``torch.no_grad``), so both ways are timed as compiled code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from attnkit import _checks, sampling
from attnkit.layers.grouped_query_attention import GroupedQueryAttention
from attnkit.ops import backend as core_backend

POSITION_EMBEDDINGS = ("rotary", "learned", None)
_MIN_BUCKET = 16  # the shortest prefix length compiled without the cache


@keras.saving.register_keras_serializable(package="attnkit")
class DecoderBlock(keras.layers.Layer):
    """A pre-norm transformer decoder block: causal GQA then a GELU MLP.

    `h = h + GQA(LN(h))`, `h = h + W_2 gelu(W_1 LN(h))`.

    Args:
        hidden_dim: model width C. Required.
        num_query_heads: query heads H. Required.
        num_key_value_heads: key/value heads Hkv, dividing H. Required.
        mlp_dim: width of the MLP's hidden layer. Required.
        sliding_window: each position sees the `sliding_window` latest
            positions (itself included), or `None` for all. Defaults to `None`.
        rotary: rotary position embeddings in the attention. Defaults to `False`.
        dropout: dropout after the attention and the MLP. Defaults to `0.0`.
        layer_norm_epsilon: epsilon of the layer norms. Defaults to `1e-5`.
    """

    def __init__(
        self,
        hidden_dim,
        num_query_heads,
        num_key_value_heads,
        mlp_dim,
        sliding_window=None,
        rotary=False,
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = _checks.positive_int(hidden_dim, "hidden_dim")
        self.num_query_heads = _checks.positive_int(num_query_heads, "num_query_heads")
        self.num_key_value_heads = _checks.positive_int(num_key_value_heads, "num_key_value_heads")
        if hidden_dim % num_query_heads:
            raise ValueError(
                "`hidden_dim` must be divisible by `num_query_heads`. "
                f"Received: hidden_dim={hidden_dim}, num_query_heads={num_query_heads}"
            )
        self.mlp_dim = _checks.positive_int(mlp_dim, "mlp_dim")
        self.sliding_window = _checks.positive_int(
            sliding_window, "sliding_window", allow_none=True
        )
        self.rotary = _checks.boolean(rotary, "rotary")
        self.dropout = _checks.rate(dropout)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.head_dim = hidden_dim // num_query_heads
        sub = {"dtype": self.dtype_policy}
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="attention_norm", **sub
        )
        extra = {"position_embedding": "rotary"} if rotary else {}
        self.attention = GroupedQueryAttention(
            head_dim=self.head_dim,
            num_query_heads=num_query_heads,
            num_key_value_heads=num_key_value_heads,
            use_bias=False,
            sliding_window=sliding_window,
            name="attention",
            **extra,
            **sub,
        )
        self.mlp_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="mlp_norm", **sub
        )
        self.mlp_in = keras.layers.Dense(mlp_dim, activation="gelu", name="mlp_in", **sub)
        self.mlp_out = keras.layers.Dense(hidden_dim, name="mlp_out", **sub)
        self.residual_dropout = keras.layers.Dropout(dropout, **sub)

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_in.build(input_shape)
        self.mlp_out.build((*input_shape[:-1], self.mlp_dim))
        self.built = True

    def call(self, x, cache=None, cache_update_index=None, training=None):
        h = self.attention_norm(x)
        if cache is None:
            h = self.attention(h, h, use_causal_mask=True, training=training)
        else:
            h, cache = self.attention(
                h, h, use_causal_mask=True, cache=cache, cache_update_index=cache_update_index
            )
        x = x + self.residual_dropout(h, training=training)
        h = self.mlp_out(self.mlp_in(self.mlp_norm(x)))
        x = x + self.residual_dropout(h, training=training)
        return x if cache is None else (x, cache)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_query_heads": self.num_query_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "mlp_dim": self.mlp_dim,
            "sliding_window": self.sliding_window,
            "rotary": self.rotary,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


@keras.saving.register_keras_serializable(package="attnkit")
class LanguageModel(keras.Model):
    """A GPT-style decoder-only transformer with grouped-query attention.

    See the module docstring for the computation. Called on token ids
    `(B, T)` int, returns next-token logits `(B, T, V)` float32.

    Args:
        vocab_size: V. Required.
        max_length: the longest sequence, and the length S of the cache
            (and of the learned position table). Required.
        num_layers: N blocks. Defaults to `4`.
        hidden_dim: model width C. Defaults to `128`.
        num_query_heads: query heads H, dividing C. Defaults to `4`.
        num_key_value_heads: key/value heads Hkv, dividing H. Defaults to `2`.
        mlp_dim: MLP hidden width; `None` means `4 * hidden_dim`.
            Defaults to `None`.
        sliding_window: attention window (positions, itself included), or
            `None`. Defaults to `None`.
        position_embedding: `"rotary"`, `"learned"` or `None`.
            Defaults to `"rotary"`.
        tie_embeddings: the output projection is the token embedding's
            transpose. Defaults to `True`.
        dropout: residual dropout rate. Defaults to `0.0`.
        layer_norm_epsilon: epsilon of the layer norms. Defaults to `1e-5`.

    Example:

    >>> import numpy as np
    >>> from attnkit.models.language_model import LanguageModel
    >>> model = LanguageModel(vocab_size=11, max_length=32, num_layers=1,
    ...                       hidden_dim=16, num_query_heads=2,
    ...                       num_key_value_heads=1)
    >>> tuple(model(np.zeros((2, 5), "int32")).shape)
    (2, 5, 11)
    >>> model.generate(np.zeros((2, 3), "int32"), 4).shape
    (2, 4)
    """

    def __init__(
        self,
        vocab_size,
        max_length,
        num_layers=4,
        hidden_dim=128,
        num_query_heads=4,
        num_key_value_heads=2,
        mlp_dim=None,
        sliding_window=None,
        position_embedding="rotary",
        tie_embeddings=True,
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = _checks.positive_int(vocab_size, "vocab_size")
        self.max_length = _checks.positive_int(max_length, "max_length")
        self.num_layers = _checks.positive_int(num_layers, "num_layers")
        self.hidden_dim = _checks.positive_int(hidden_dim, "hidden_dim")
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.mlp_dim = _checks.positive_int(
            4 * hidden_dim if mlp_dim is None else mlp_dim, "mlp_dim"
        )
        self.sliding_window = sliding_window
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"`position_embedding` must be one of {POSITION_EMBEDDINGS}. "
                f"Received: position_embedding={position_embedding!r}"
            )
        self.position_embedding = position_embedding
        self.tie_embeddings = _checks.boolean(tie_embeddings, "tie_embeddings")
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        sub = {"dtype": self.dtype_policy}
        self.token_embedding = keras.layers.Embedding(
            vocab_size,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="token_embedding",
            **sub,
        )
        self.position_table = None
        if position_embedding == "learned":
            self.position_table = keras.layers.Embedding(
                max_length,
                hidden_dim,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="position_embedding",
                **sub,
            )
        self.blocks = [
            DecoderBlock(
                hidden_dim,
                num_query_heads,
                num_key_value_heads,
                self.mlp_dim,
                sliding_window=sliding_window,
                rotary=position_embedding == "rotary",
                dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                name=f"block_{i}",
                **sub,
            )
            for i in range(num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="final_norm", **sub
        )
        self.output_projection = None
        if not tie_embeddings:
            self.output_projection = keras.layers.Dense(
                vocab_size, use_bias=False, name="output_projection", **sub
            )
        self._compiled_steps = {}

    @property
    def head_dim(self):
        return self.hidden_dim // self.num_query_heads

    def build(self, input_shape=None):
        self.token_embedding.build((None, None))
        if self.position_table is not None:
            self.position_table.build((None,))
        shape = (None, None, self.hidden_dim)
        for block in self.blocks:
            block.build(shape)
        self.final_norm.build(shape)
        if self.output_projection is not None:
            self.output_projection.build(shape)
        self.built = True

    def call(self, token_ids, training=None):
        x = self._embed(token_ids, 0)
        for block in self.blocks:
            x = block(x, training=training)
        return self._logits(x)

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Logits `(B, T, V)` of tokens at positions `index, ...`, and the new cache.

        `cache` is `(B, N, 2, S, Hkv, D)` (``init_cache``), one
        `(B, 2, S, Hkv, D)` slice per block.
        """
        x = self._embed(token_ids, cache_update_index)
        caches = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, cache=cache[:, i], cache_update_index=cache_update_index)
            caches.append(layer_cache)
        return self._logits(x), ops.stack(caches, axis=1)  # (B, N, 2, S, Hkv, D)

    def init_cache(self, batch_size):
        """An empty cache `(B, N, 2, max_length, Hkv, D)` in the compute dtype."""
        shape = (batch_size, self.num_layers, 2, self.max_length)
        return ops.zeros((*shape, self.num_key_value_heads, self.head_dim), self.compute_dtype)

    def _embed(self, token_ids, offset):
        x = self.token_embedding(token_ids)  # (B, T, C)
        if self.position_table is not None:
            length = ops.shape(token_ids)[1]
            positions = ops.arange(length, dtype="int32") + ops.cast(offset, "int32")  # (T,)
            x = x + self.position_table(positions)[None]  # (B, T, C)
        return x

    def _logits(self, x):
        x = self.final_norm(x)
        if self.output_projection is not None:
            return ops.cast(self.output_projection(x), "float32")
        table = ops.cast(self.token_embedding.embeddings, x.dtype)  # (V, C)
        return ops.cast(ops.einsum("btc,vc->btv", x, table), "float32")  # (B, T, V)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.vocab_size)

    def generate(
        self,
        prompt_tokens,
        num_tokens,
        *,
        use_cache=True,
        temperature=0.0,
        top_k=None,
        top_p=None,
        seed=0,
    ):
        """``num_tokens`` tokens continuing ``prompt_tokens``, (B, num_tokens) int32.

        With the cache, the prompt fills the cache in one call and then each
        step runs one token through every block's cache at index
        `P + step - 1`. Without it, each step runs the model over the whole
        prefix (padded up to the next power of two, at least 16, so that a
        few compiled shapes serve every length) and reads the logits at its
        last real position. Tokens are drawn by
        ``attnkit.sampling.sample_tokens`` (temperature, top-k, top-p;
        temperature 0 is greedy) with ``seed`` and the step number, so both
        ways draw the same tokens from the same logits.

        Args:
            prompt_tokens: (B, P) int token ids, P >= 1.
            num_tokens: tokens to generate; P + num_tokens <= max_length.
            use_cache: decode through the key/value cache. Defaults to `True`.
            temperature: as in `attnkit.sampling.filter_log_probs`; `0.0`
                is greedy. Defaults to `0.0`.
            top_k: as in `attnkit.sampling.filter_log_probs`. Defaults to `None`.
            top_p: as in `attnkit.sampling.filter_log_probs`. Defaults to `None`.
            seed: sampling seed. Defaults to `0`.

        Returns:
            A NumPy (B, num_tokens) int32 array.
        """
        prompt = np.asarray(prompt_tokens, dtype="int32")
        if prompt.ndim != 2 or prompt.shape[1] < 1:
            raise ValueError(
                "`prompt_tokens` must be (batch, length >= 1) token ids. "
                f"Received: prompt_tokens.shape={prompt.shape}"
            )
        _checks.positive_int(num_tokens, "num_tokens")
        if prompt.shape[1] + num_tokens > self.max_length:
            raise ValueError(
                "The prompt and the generated tokens must fit in `max_length` "
                f"({self.max_length}). Received: prompt length {prompt.shape[1]}, "
                f"num_tokens={num_tokens}"
            )
        sample = sampling.check_sampling(temperature, top_k, top_p)
        if isinstance(seed, bool) or not isinstance(seed, int):
            _checks._fail("seed", "an integer", seed)
        if not self.built:
            self.build()
        if use_cache:
            return self._generate_cached(prompt, num_tokens, sample, seed)
        return self._generate_uncached(prompt, num_tokens, sample, seed)

    def _generate_cached(self, prompt, num_tokens, sample, seed):
        step = self._step("cached", sample, seed)
        batch, length = prompt.shape
        token, cache = step(prompt, self.init_cache(batch), _i32(0), _i32(0))
        out = [token]
        for t in range(1, num_tokens):
            index = length + t - 1  # where the previous token goes
            token, cache = step(token[:, None], cache, _i32(index), _i32(t))
            out.append(token)
        return np.stack([ops.convert_to_numpy(t) for t in out], axis=1)

    def _generate_uncached(self, prompt, num_tokens, sample, seed):
        step = self._step("uncached", sample, seed)
        batch, length = prompt.shape
        total = length + num_tokens - 1  # the longest prefix fed
        buffer = np.zeros((batch, _bucket(total, self.max_length)), "int32")
        buffer[:, :length] = prompt
        out = []
        for t in range(num_tokens):
            end = length + t
            width = _bucket(end, self.max_length)
            token = step(buffer[:, :width], _i32(end - 1), _i32(t))
            token = ops.convert_to_numpy(token)
            out.append(token)
            if t + 1 < num_tokens:
                buffer[:, end] = token
        return np.stack(out, axis=1)

    def _step(self, kind, sample, seed):
        """The compiled step of ``kind`` for these sampling settings (memoised)."""
        key = (kind, sample, seed)
        if key not in self._compiled_steps:
            temperature, top_k, top_p = sample

            def choose(logits, t):  # logits (B, V)
                return sampling.sample_tokens(
                    logits, seed, t, temperature=temperature, top_k=top_k, top_p=top_p
                )

            fn: Callable[..., Any]  # one signature per kind
            if kind == "cached":

                def fn(tokens, cache, index, t):
                    logits, cache = self.call_with_cache(tokens, cache, index)
                    return choose(logits[:, -1], t), cache

            else:

                def fn(tokens, last, t):
                    logits = self(tokens)  # (B, T, V)
                    last_logits = ops.take(logits, last, axis=1)  # (B, V)
                    return choose(last_logits, t)

            self._compiled_steps[key] = _compile(self, fn)
        return self._compiled_steps[key]

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_query_heads": self.num_query_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "mlp_dim": self.mlp_dim,
            "sliding_window": self.sliding_window,
            "position_embedding": self.position_embedding,
            "tie_embeddings": self.tie_embeddings,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def _i32(value):
    return np.asarray(value, dtype="int32")


def _bucket(length, cap):
    """The next power of two >= ``length`` (at least ``_MIN_BUCKET``), at most ``cap``."""
    width = _MIN_BUCKET
    while width < length:
        width *= 2
    return min(width, cap)


def _compile(model, fn):
    """``fn`` compiled for the backend, reading ``model``'s current weights."""
    return core_backend.compiled(fn, list(model.variables))
