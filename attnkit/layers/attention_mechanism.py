"""The base of the attention mechanisms of ``AttentionRNNCell``.

Shape legend: B batch, Tq query length, Tv memory (key/value) length, Dq query
size, Dv memory size, Di step-input size, U score units.

A mechanism maps one decoder query and the encoder memory to an alignment:

    step(query (B, Dq), memory (B, Tv, Dv), mask (B, Tv) | None,
         previous (B, Tv), states, inputs (B, Di) | None, training)
        -> (alignment (B, Tv), new_states)

``previous`` is the alignment of the previous step (``initial_alignment`` at
the first one); ``states`` are extra per-example tensors a mechanism carries
(``state_sizes``). Used on its own, a mechanism is a layer over
``[query, value]`` (or ``[query, value, inputs]``, the step inputs
(B, Tq, Di)) that runs ``step`` over the Tq queries in order.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from attnkit.layers._query_value import QueryValueInputsMixin
from attnkit.ops.scores import (
    additive_score,
    at_least_float32,
    dot_score,
    general_score,
    l2_normalize,
    scaled_dot_score,
)


def first_position(template):
    """α_0 = [1, 0, ..., 0] (B, Tv) from a zero template."""
    return ops.pad(template[:, 1:], [(0, 0), (1, 0)], constant_values=1.0)


class AttentionMechanism(QueryValueInputsMixin, keras.layers.Layer):
    """Base of the mechanisms: the standalone layer call and the step contract.

    Subclasses implement ``build_mechanism(query_dim, memory_dim, input_dim)``
    and ``step``; those that carry state across steps also
    ``initial_alignment``, ``state_sizes`` and ``initial_states``. Not
    registered: it is abstract.

    The standalone call is not given an output shape: Keras traces it, so
    that a query without a static length is refused there too.
    """

    _third_input = "inputs"  # the step inputs (B, Tq, Di), e.g. ForwardAttention's agent
    _any_batch_rank = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        shapes = self._validate_inputs(input_shape, arg_name="input_shape")
        input_dim = shapes[2][-1] if len(shapes) > 2 else None
        self.build_mechanism(shapes[0][-1], shapes[1][-1], input_dim)

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        self._validate_inputs(inputs, mask)
        (query, value, step_inputs), (query_mask, value_mask, _) = self._unpack_inputs(inputs, mask)
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

    def _build_luong(self, query_dim, memory_dim, score_mode, use_scale):
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
                initializer=keras.initializers.Constant(1.0),
                dtype=self.dtype,
            )

    def _luong_energies(self, query, memory, score_mode):
        # Float32 energies: in float16 a dot product of representable inputs overflows.
        query, memory = at_least_float32(query, memory)
        query = query[:, None, :]  # (B, 1, Dq)
        if score_mode == "general":  # sᵀ W h_j; the weight is stored as Wᵀ (Dv, Dq)
            energies = general_score(query, memory, ops.transpose(self.memory_kernel))
        elif score_mode == "scaled_dot":
            energies = scaled_dot_score(query, memory)
        else:
            energies = dot_score(query, memory)
        energies = energies[:, 0]  # (B, 1, Tv) -> (B, Tv)
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
        v = self.attention_v
        if self.attention_g is not None:  # weight normalisation: g · v / |v|
            # ops.scores' one normalisation, in float32: v = 0 stays finite.
            v = self.attention_g * l2_normalize(v)
        v = ops.cast(v, q.dtype)
        return additive_score(q[:, None, :], keys, v)[:, 0]  # (B, Tv)
