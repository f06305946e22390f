"""Attention mechanisms for ``AttentionRNNCell``: Luong and Bahdanau, and their base.

Shape legend: B batch, Tq query length, Tv memory (key/value) length, Dq query
size, Dv memory size, U score units.

A mechanism maps one decoder query and the encoder memory to an alignment:

    step(query (B, Dq), memory (B, Tv, Dv), mask (B, Tv) | None,
         previous (B, Tv), states, inputs (B, Di) | None, training)
        -> (alignment (B, Tv), new_states)

``previous`` is the alignment of the previous step (``initial_alignment`` at
the first one); ``states`` are extra per-example tensors a mechanism carries
(``state_sizes``). Used on its own, a mechanism is a layer over
``[query, value]`` that runs ``step`` over the Tq queries in order.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from attnkit.layers import _base
from attnkit.ops.scores import additive_score, dot_score
from attnkit.ops.softmax import masked_softmax

LUONG_SCORES = ("dot", "general", "scaled_dot")


def _grouped(x):
    # (B, T, D) -> attnkit's grouped score layout (B, T, Hkv=1, G=1, D)
    return x[:, :, None, None, :]


def _keys(x):
    return x[:, :, None, :]  # (B, Tv, Hkv=1, D)


def _row(logits):
    return logits[:, 0, 0, 0, :]  # (B, 1, 1, 1, Tv) -> (B, Tv)


class AttentionMechanism(keras.layers.Layer):
    """Base of the mechanisms: the standalone layer call and the step contract.

    Subclasses implement ``build_mechanism(query_dim, memory_dim, input_dim)``
    and ``step``; stateful ones also ``initial_alignment``, ``state_sizes`` and
    ``initial_states``. Not registered: it is abstract.
    """

    #: Whether the alignment depends on the previous one.
    stateful = False

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not isinstance(
            input_shape[0], (list, tuple)
        ):
            raise ValueError(
                f"{type(self).__name__} is called on `[query, value]` (or "
                f"`[query, value, inputs]`). Received: input_shape={input_shape!r}"
            )
        input_dim = input_shape[2][-1] if len(input_shape) > 2 else None
        self.build_mechanism(input_shape[0][-1], input_shape[1][-1], input_dim)

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        query, value = inputs[0], inputs[1]
        step_inputs = inputs[2] if len(inputs) > 2 else None
        query_mask = value_mask = None
        if mask is not None:
            query_mask, value_mask = mask[0], mask[1]
        tq = query.shape[1]
        if not isinstance(tq, int):  # None, or a JAX symbolic dimension
            raise ValueError(
                f"{type(self).__name__} runs its recursion over a static query "
                f"length. Received: query.shape={tuple(query.shape)}"
            )
        template = ops.zeros_like(value[:, :, 0])  # (B, Tv)
        previous = ops.cast(self.initial_alignment(template), "float32")
        states = self.initial_states(template)
        alignments = []
        for i in range(tq):  # a static unroll over Tq: each step needs the last
            x_i = None if step_inputs is None else step_inputs[:, i]
            alignment, new_states = self.step(
                query[:, i],
                value,
                value_mask,
                previous,
                states,
                inputs=x_i,
                training=training,
            )
            if query_mask is not None:  # a padded query leaves the recursion as it was
                keep = ops.cast(query_mask[:, i : i + 1], "bool")  # (B, 1)
                alignment = ops.where(keep, alignment, ops.zeros_like(alignment))
                new_states = [
                    ops.where(keep, n, s) for n, s in zip(new_states, states, strict=True)
                ]
                previous = ops.where(keep, alignment, previous)
            else:
                previous = alignment
            states = new_states
            alignments.append(alignment)
        scores = ops.stack(alignments, axis=1)  # (B, Tq, Tv)
        output = ops.einsum("bqk,bkd->bqd", ops.cast(scores, value.dtype), value)  # (B, Tq, Dv)
        if return_attention_scores:
            return output, ops.cast(scores, self.compute_dtype)
        return output

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return mask[0]

    # -- the step contract --------------------------------------------------

    def initial_alignment(self, template):
        """α_0 (B, Tv) from a zero template (B, Tv): zeros unless overridden."""
        return ops.zeros_like(template)

    def state_sizes(self, memory_length):
        """Sizes of the extra states for a memory of ``memory_length``."""
        return []

    def initial_states(self, template):
        """The extra states at the first step, from a zero template (B, Tv)."""
        return []

    # -- shared scoring -----------------------------------------------------

    def _build_luong(self, query_dim, memory_dim, score_mode, use_scale, scale_init=1.0):
        self.memory_kernel = None
        if score_mode == "general":
            self.memory_kernel = self.add_weight(
                name="memory_kernel",
                shape=(memory_dim, query_dim),
                initializer=self.kernel_initializer,
                dtype=self.dtype,
            )
        elif query_dim != memory_dim:
            raise ValueError(
                f'score_mode="{score_mode}" compares the query with the memory '
                'directly and needs equal sizes (use "general" to project). '
                f"Received: query size={query_dim}, memory size={memory_dim}"
            )
        self.scale = None
        if use_scale:
            self.scale = self.add_weight(
                name="scale",
                shape=(),
                initializer=keras.initializers.Constant(scale_init),
                dtype=self.dtype,
            )

    def _luong_energies(self, query, memory, score_mode):
        keys = memory  # (B, Tv, Dv)
        if self.memory_kernel is not None:
            keys = ops.matmul(memory, ops.cast(self.memory_kernel, memory.dtype))  # (B, Tv, Dq)
        energies = _row(dot_score(_grouped(query[:, None, :]), _keys(keys)))  # (B, Tv)
        if score_mode == "scaled_dot":
            energies = energies / math.sqrt(query.shape[-1])
        if self.scale is not None:
            energies = energies * ops.cast(self.scale, energies.dtype)
        return energies

    def _build_bahdanau(self, query_dim, memory_dim, units, normalize):
        init = self.kernel_initializer
        self.query_kernel = self.add_weight(
            name="query_kernel",
            shape=(query_dim, units),
            initializer=init,
            dtype=self.dtype,
        )
        self.memory_kernel = self.add_weight(
            name="memory_kernel",
            shape=(memory_dim, units),
            initializer=init,
            dtype=self.dtype,
        )
        self.attention_v = self.add_weight(
            name="attention_v", shape=(units,), initializer=init, dtype=self.dtype
        )
        self.attention_g = self.attention_b = None
        if normalize:
            self.attention_g = self.add_weight(
                name="attention_g",
                shape=(),
                initializer=keras.initializers.Constant(math.sqrt(1.0 / units)),
                dtype=self.dtype,
            )
            self.attention_b = self.add_weight(
                name="attention_b",
                shape=(units,),
                initializer="zeros",
                dtype=self.dtype,
            )

    def _bahdanau_energies(self, query, memory, extra_keys=None):
        q = ops.matmul(query, ops.cast(self.query_kernel, query.dtype))  # (B, U)
        if self.attention_b is not None:
            q = q + ops.cast(self.attention_b, q.dtype)
        keys = ops.matmul(memory, ops.cast(self.memory_kernel, memory.dtype))  # (B, Tv, U)
        if extra_keys is not None:
            keys = keys + ops.cast(extra_keys, keys.dtype)  # e.g. location features
        v = ops.cast(self.attention_v, q.dtype)
        if self.attention_g is not None:  # weight normalisation: g · v / |v|
            v = ops.cast(self.attention_g, q.dtype) * v / ops.sqrt(ops.sum(ops.square(v)))
        return _row(additive_score(_grouped(q[:, None, :]), _keys(keys), v))  # (B, Tv)


def check_luong_score(score_mode):
    if score_mode not in LUONG_SCORES:
        raise ValueError(
            f"`score_mode` must be one of {LUONG_SCORES}. Received: score_mode={score_mode!r}"
        )
    return score_mode


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
        self.score_mode = check_luong_score(score_mode)
        self.use_scale = _base.check_bool(use_scale, "use_scale")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

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


@keras.saving.register_keras_serializable(package="attnkit")
class BahdanauAttention(AttentionMechanism):
    """Bahdanau's additive attention as a mechanism for `AttentionRNNCell`.

    Bahdanau, Cho and Bengio 2014 (https://arxiv.org/abs/1409.0473). For a
    query `s` (B, Dq) and memory `h` (B, Tv, Dv):

    1. energies `e_j = vᵀ tanh(W s + V h_j)` with `query_kernel` W (Dq, U),
       `memory_kernel` V (Dv, U) and `attention_v` v (U,). With `normalize`,
       v is weight-normalised, `g · v / |v|` (learned `attention_g`, init
       `sqrt(1/U)`), and a bias `attention_b` (U,) joins inside the tanh
       (Salimans and Kingma 2016, as in Raffel et al. 2017).
    2. alignment `α = softmax(e)` over the visible memory positions.

    Masking: as `LuongAttention`.

    Args:
        units: the width U of the projections.
        normalize: weight-normalise v and add a bias. Defaults to `False`.
        kernel_initializer: initializer of W, V and v.
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
    >>> layer = attnkit.layers.BahdanauAttention(units=8)
    >>> q = np.ones((2, 3, 4), "float32"); v = np.ones((2, 5, 6), "float32")
    >>> tuple(layer([q, v]).shape)
    (2, 3, 6)

    References:
        - Bahdanau, Cho, Bengio 2014, https://arxiv.org/abs/1409.0473
    """

    def __init__(self, units, normalize=False, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = _base.check_positive_int(units, "units")
        self.normalize = _base.check_bool(normalize, "normalize")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build_mechanism(self, query_dim, memory_dim, input_dim=None):
        self._build_bahdanau(query_dim, memory_dim, self.units, self.normalize)
        self.built = True

    def step(self, query, memory, mask, previous, states, inputs=None, training=None):
        energies = self._bahdanau_energies(query, memory)
        return masked_softmax(energies, mask, axis=-1), []

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "normalize": self.normalize,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
