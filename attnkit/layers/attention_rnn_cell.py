"""An RNN cell with attention over an encoder memory (seq2seq decoders)."""

from __future__ import annotations

from typing import NamedTuple

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers.attention_mechanism import AttentionMechanism


class _CellState(NamedTuple):
    """The recurrent state of ``AttentionRNNCell``, before flattening.

    Each field is a tensor (or, in ``state_size``, a size): rank-2 tensors,
    lists of them for the wrapped cell's and the mechanism's states.
    """

    output: object  # (B, output_size): first, Keras' JAX backend repeats it on masked steps
    cell_states: list  # the wrapped cell's states
    attention: object  # (B, A)
    alignment: object  # (B, Tv)
    mechanism_states: list  # the mechanism's extra states
    memory: object  # (B, Tv·Dv), the flattened memory
    memory_mask: object  # (B, Tv), 1.0 = may attend


@keras.saving.register_keras_serializable(package="attnkit")
class AttentionRNNCell(keras.layers.Layer):
    """Wraps a Keras RNN cell with attention over an encoder memory.

    The successor of tensorflow-addons' `AttentionWrapper` for Keras 3 (the
    decoder of Bahdanau et al. 2014 / Luong et al. 2015). Shape legend: B
    batch, Tv memory length, Dv memory size, A attention size. Each step,
    with step input `x_t` and the state of the previous step:

    1. cell input `[x_t; a_{t-1}]` (the previous attention vector), or
       `cell_input_fn(x_t, a_{t-1})`;
    2. `o_t, s_t = cell(cell input, s_{t-1})`;
    3. alignment `α_t = mechanism(query=o_t, memory, α_{t-1})` (B, Tv)
       (the query is the wrapped cell's new output, as in tensorflow-addons);
    4. context `c_t = Σ_j α_tj h_j` (B, Dv);
    5. attention `a_t = act(W [o_t; c_t])` with `attention_layer` W (no bias)
       when `attention_layer_size` is set, else `a_t = c_t`;
    6. output `a_t` (or `o_t` without `output_attention`), followed by `α_t`
       when `alignment_history` is set.

    The memory is not bound in the constructor: it travels in the recurrent
    state. `get_initial_state(memory=..., memory_mask=...)` builds that state,
    which `keras.layers.RNN(cell)` takes as `initial_state`. The state is a
    flat list of rank-2 tensors, in this order:
    `[output (B, output_size), *cell_states, attention (B, A),
    alignment (B, Tv), *mechanism_states, memory (B, Tv·Dv),
    memory_mask (B, Tv)]`. The last output comes first because Keras' JAX
    backend repeats `states[0]` as the output of a masked step.

    Masking: `memory_mask` (B, Tv), True = may attend, comes from the
    argument or the memory's Keras mask. Masked positions get weight 0; a
    row with nothing visible gets zero weights and a zero context, never NaN.
    A decoder-side mask is `keras.layers.RNN`'s (masked steps keep the state).

    Args:
        cell: the wrapped cell (`LSTMCell`, `GRUCell`, `SimpleRNNCell`, or
            any Keras 3 cell without dropout), or its serialized config.
        mechanism: an attnkit mechanism (`LuongAttention`,
            `BahdanauAttention`, `MonotonicAttention`, `ForwardAttention`,
            `LocationSensitiveAttention`) or its serialized config.
        attention_layer_size: A, the size of the attention layer, or `None`
            to use the context as the attention (A = Dv). Defaults to `None`.
        alignment_history: append the alignment to every output, so that
            `keras.layers.RNN(..., return_sequences=True)` returns
            `(B, Ty, size + Tv)`; `split_output` separates them into the
            outputs and the alignments (B, Ty, Tv). Defaults to `False`.
        output_attention: output the attention `a_t` (Luong) rather than the
            cell output `o_t` (Bahdanau). Defaults to `True`.
        attention_activation: activation of the attention layer (Luong uses
            `"tanh"`). Defaults to `None`.
        cell_input_fn: `f(inputs (B, Di), attention (B, A)) -> (B, Dc)`, the
            wrapped cell's input, written with `keras.ops` (tensorflow-addons'
            `cell_input_fn`); `None` concatenates `[inputs; attention]`. It
            is saved by name: register it with
            `keras.saving.register_keras_serializable` so that models reload
            in safe mode (a lambda does not). Defaults to `None`.
        memory_shape: `(Tv, Dv)` of the memory. Learned from the first
            `get_initial_state(memory=...)` when `None`; it is needed before
            the cell is wrapped in `keras.layers.RNN` (for `state_size`), and
            saved with the config. `Tv` may be `None` (a dynamic length).
            Defaults to `None`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: the step input (B, Di).
        states: the list described above.
        training: passed to the wrapped cell and mechanism.

    Returns:
        `(output, new_states)`.

    Example:

    >>> import numpy as np, keras, attnkit
    >>> memory = np.random.normal(size=(2, 7, 8)).astype("float32")
    >>> targets = np.random.normal(size=(2, 4, 3)).astype("float32")
    >>> cell = attnkit.layers.AttentionRNNCell(
    ...     keras.layers.LSTMCell(16), attnkit.layers.BahdanauAttention(10),
    ...     alignment_history=True)
    >>> state = cell.get_initial_state(memory=memory)
    >>> out = keras.layers.RNN(cell, return_sequences=True)(targets, initial_state=state)
    >>> outputs, alignments = cell.split_output(out)
    >>> tuple(outputs.shape), tuple(alignments.shape)
    ((2, 4, 8), (2, 4, 7))

    References:
        - Bahdanau, Cho, Bengio 2014, https://arxiv.org/abs/1409.0473
        - Luong, Pham, Manning 2015, https://arxiv.org/abs/1508.04025
    """

    def __init__(
        self,
        cell,
        mechanism,
        attention_layer_size=None,
        alignment_history=False,
        output_attention=True,
        attention_activation=None,
        memory_shape=None,
        cell_input_fn=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(cell_input_fn, (dict, str)):
            cell_input_fn = keras.saving.deserialize_keras_object(cell_input_fn)
        if cell_input_fn is not None and not callable(cell_input_fn):
            raise ValueError(
                "`cell_input_fn` must be a function f(inputs, attention) -> cell input, "
                f"or None for their concatenation. Received: cell_input_fn={cell_input_fn!r}"
            )
        self.cell_input_fn = cell_input_fn
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        if isinstance(mechanism, dict):
            mechanism = keras.saving.deserialize_keras_object(mechanism)
        if not (hasattr(cell, "state_size") and callable(getattr(cell, "call", None))):
            raise ValueError(
                "`cell` must be a Keras RNN cell (with `state_size` and `call`). "
                f"Received: cell={cell!r}"
            )
        for name in ("dropout", "recurrent_dropout"):
            if getattr(cell, name, 0) and getattr(cell, name) > 0:
                raise ValueError(
                    f"The wrapped cell's `{name}` is not supported inside "
                    "AttentionRNNCell (its masks would be drawn inside the loop). "
                    f"Received: {name}={getattr(cell, name)!r}"
                )
        if not isinstance(mechanism, AttentionMechanism):
            raise ValueError(
                "`mechanism` must be an attnkit attention mechanism (e.g. "
                f"BahdanauAttention). Received: mechanism={mechanism!r}"
            )
        self.cell = cell
        self.mechanism = mechanism
        self.attention_layer_size = _checks.positive_int(
            attention_layer_size, "attention_layer_size", allow_none=True
        )
        self.alignment_history = _checks.boolean(alignment_history, "alignment_history")
        self.output_attention = _checks.boolean(output_attention, "output_attention")
        self.attention_activation = keras.activations.get(attention_activation)
        self.memory_shape = _check_memory_shape(memory_shape)
        self.attention_layer = None
        if self.attention_layer_size is not None:
            self.attention_layer = keras.layers.Dense(
                self.attention_layer_size,
                use_bias=False,
                activation=self.attention_activation,
                dtype=self.dtype_policy,
                name="attention_layer",
            )

    # -- the Keras cell contract ---------------------------------------------

    @property
    def _cell_state_sizes(self):
        size = self.cell.state_size
        return list(size) if isinstance(size, (list, tuple)) else [size]

    @property
    def _cell_output_size(self):
        size = getattr(self.cell, "output_size", None)
        return size if size is not None else self._cell_state_sizes[0]

    @property
    def _attention_size(self):
        if self.attention_layer_size is not None:
            return self.attention_layer_size
        return self._require_memory_shape()[1]

    def _require_memory_shape(self):
        if self.memory_shape is None:
            raise ValueError(
                "AttentionRNNCell does not know its memory yet: call "
                "`cell.get_initial_state(memory=...)` before wrapping the cell in "
                "`keras.layers.RNN`, or pass `memory_shape=(Tv, Dv)`. "
                f"Received: memory_shape={self.memory_shape!r}"
            )
        return self.memory_shape

    @property
    def state_size(self):
        length, depth = self._require_memory_shape()
        return self._pack_state(
            _CellState(
                output=self.output_size,
                cell_states=self._cell_state_sizes,
                attention=self._attention_size,
                alignment=length,
                mechanism_states=self.mechanism.state_sizes(length),
                memory=None if length is None else length * depth,
                memory_mask=length,
            )
        )

    @staticmethod
    def _pack_state(state):
        """The flat state list of a ``_CellState``: the one place that fixes the order."""
        return [
            state.output,
            *state.cell_states,
            state.attention,
            state.alignment,
            *state.mechanism_states,
            state.memory,
            state.memory_mask,
        ]

    def _unpack_state(self, states):
        """The ``_CellState`` of a flat state list (the inverse of ``_pack_state``)."""
        states = list(states)
        n_cell = len(self._cell_state_sizes)
        n_mechanism = len(self.mechanism.state_sizes(None))
        attention_at = 1 + n_cell
        mechanism_at = attention_at + 2
        memory_at = mechanism_at + n_mechanism
        return _CellState(
            output=states[0],
            cell_states=states[1:attention_at],
            attention=states[attention_at],
            alignment=states[attention_at + 1],
            mechanism_states=states[mechanism_at:memory_at],
            memory=states[memory_at],
            memory_mask=states[memory_at + 1],
        )

    @property
    def output_size(self):
        size = self._attention_size if self.output_attention else self._cell_output_size
        if self.alignment_history:
            length = self._require_memory_shape()[0]
            if length is None:
                raise ValueError(
                    "`alignment_history=True` appends the alignment to the output "
                    "and needs a static memory length. "
                    f"Received: memory_shape={self.memory_shape!r}"
                )
            size += length
        return size

    def get_initial_state(self, batch_size=None, memory=None, memory_mask=None, cell_state=None):
        """The first state, carrying `memory` (B, Tv, Dv) and its mask (B, Tv).

        Works on eager tensors and on symbolic `keras.Input`s (the state is
        then part of the functional model). `cell_state` replaces the zero
        state of the wrapped cell (e.g. with the encoder's final state).
        `batch_size` is accepted for the Keras contract; the batch is the
        memory's. Raises `ValueError` without a memory.
        """
        if memory is None:
            raise ValueError(
                "AttentionRNNCell needs the encoder memory: pass "
                "`initial_state=cell.get_initial_state(memory=memory)` to "
                f"keras.layers.RNN. Received: memory={memory!r}"
            )
        if len(memory.shape) != 3:
            raise ValueError(
                f"`memory` must be (B, Tv, Dv). Received: memory.shape={tuple(memory.shape)}"
            )
        length, depth = memory.shape[1], memory.shape[2]
        if self.memory_shape is None:
            self.memory_shape = (length, depth)
        elif self.memory_shape[1] != depth or (
            self.memory_shape[0] is not None and self.memory_shape[0] != length
        ):
            raise ValueError(
                f"`memory` does not match memory_shape={self.memory_shape}. "
                f"Received: memory.shape={tuple(memory.shape)}"
            )
        if memory_mask is None:
            memory_mask = getattr(memory, "_keras_mask", None)
        dtype = self.compute_dtype
        memory = ops.cast(memory, dtype)
        template = ops.zeros_like(memory[:, :, 0])  # (B, Tv)
        zero_column = template[:, :1]  # (B, 1)
        if memory_mask is None:
            mask = ops.ones_like(template)
        else:
            mask = ops.cast(ops.cast(memory_mask, "bool"), dtype)  # (B, Tv)
        if cell_state is None:
            cell_states = [zero_column * ops.zeros((1, s), dtype) for s in self._cell_state_sizes]
        else:
            cell_states = (
                list(cell_state) if isinstance(cell_state, (list, tuple)) else [cell_state]
            )
            if len(cell_states) != len(self._cell_state_sizes):
                raise ValueError(
                    f"`cell_state` must hold {len(self._cell_state_sizes)} tensors "
                    f"(the wrapped cell's states). Received: len(cell_state)={len(cell_states)}"
                )
            cell_states = [ops.cast(s, dtype) for s in cell_states]
        attention = zero_column * ops.zeros((1, self._attention_size), dtype)  # (B, A)
        alignment = ops.cast(self.mechanism.initial_alignment(template), dtype)  # (B, Tv)
        mechanism_states = [ops.cast(s, dtype) for s in self.mechanism.initial_states(template)]
        if length is not None:
            flat = ops.reshape(memory, (-1, length * depth))  # (B, Tv·Dv)
        else:
            flat = ops.reshape(memory, (ops.shape(memory)[0], -1))
        output = zero_column * ops.zeros((1, self.output_size), dtype)  # (B, output_size)
        return self._pack_state(
            _CellState(output, cell_states, attention, alignment, mechanism_states, flat, mask)
        )

    def split_output(self, output):
        """`(outputs, alignments)` from an output made with `alignment_history`."""
        if not self.alignment_history:
            raise ValueError(
                "`split_output` needs `alignment_history=True`. "
                f"Received: alignment_history={self.alignment_history!r}"
            )
        length = self._require_memory_shape()[0]
        return output[..., :-length], output[..., -length:]

    def state_alignment(self, states):
        """The current alignment (B, Tv) from a state list."""
        return self._unpack_state(states).alignment

    # -- layer methods --------------------------------------------------------

    def build(self, input_shape):
        length, depth = self._require_memory_shape()
        input_dim = input_shape[-1]
        cell_input_shape = (input_shape[0], self._cell_input_dim(input_dim))
        if not self.cell.built:
            self.cell.build(cell_input_shape)
        query_dim = self._cell_output_size
        if not self.mechanism.built:
            self.mechanism.build(
                [
                    (None, None, query_dim),
                    (None, length, depth),
                    (None, None, input_dim),
                ]
            )
        if self.attention_layer is not None and not self.attention_layer.built:
            self.attention_layer.build((input_shape[0], query_dim + depth))

    def _cell_input(self, inputs, attention):
        attention = ops.cast(attention, inputs.dtype)
        if self.cell_input_fn is None:
            return ops.concatenate([inputs, attention], axis=-1)
        return self.cell_input_fn(inputs, attention)

    def _cell_input_dim(self, input_dim):
        if self.cell_input_fn is None:
            return input_dim + self._attention_size
        # The function's output size, from one row of zeros.
        probe = self._cell_input(
            ops.zeros((1, input_dim), self.compute_dtype),
            ops.zeros((1, self._attention_size), self.compute_dtype),
        )
        if len(probe.shape) != 2:
            raise ValueError(
                "`cell_input_fn` must return a (B, Dc) tensor for inputs (B, Di) and "
                f"attention (B, A). Received: cell_input_fn={self.cell_input_fn!r} "
                f"returning shape {tuple(probe.shape)}"
            )
        return probe.shape[-1]

    def call(self, inputs, states, training=None):
        state = self._unpack_state(states)  # state.output, the last output, is not read
        depth = self.memory_shape[1]
        memory = ops.reshape(state.memory, (ops.shape(state.memory)[0], -1, depth))  # (B, Tv, Dv)
        memory_mask = ops.cast(state.memory_mask, "bool")  # (B, Tv)

        cell_inputs = self._cell_input(inputs, state.attention)
        cell_output, new_cell_states = self.cell(cell_inputs, state.cell_states, training=training)
        if not isinstance(new_cell_states, (list, tuple)):
            new_cell_states = [new_cell_states]

        alignment, new_mechanism_states = self.mechanism.step(
            cell_output,
            memory,
            memory_mask,
            state.alignment,
            state.mechanism_states,
            inputs=inputs,
            training=training,
        )
        alignment = ops.cast(alignment, memory.dtype)  # (B, Tv)
        context = ops.einsum("bk,bkd->bd", alignment, memory)  # (B, Dv)
        if self.attention_layer is not None:
            attention = self.attention_layer(ops.concatenate([cell_output, context], axis=-1))
        else:
            attention = context
        output = attention if self.output_attention else cell_output
        if self.alignment_history:
            output = ops.concatenate([output, ops.cast(alignment, output.dtype)], axis=-1)
        dtype = self.compute_dtype
        new_states = self._pack_state(
            state._replace(
                output=output,
                cell_states=new_cell_states,
                attention=attention,
                alignment=alignment,
                mechanism_states=new_mechanism_states,
            )
        )
        return ops.cast(output, dtype), [ops.cast(s, dtype) for s in new_states]

    def get_config(self):
        return {
            **super().get_config(),
            "cell": keras.saving.serialize_keras_object(self.cell),
            "mechanism": keras.saving.serialize_keras_object(self.mechanism),
            "attention_layer_size": self.attention_layer_size,
            "alignment_history": self.alignment_history,
            "output_attention": self.output_attention,
            "attention_activation": keras.activations.serialize(self.attention_activation)
            if self.attention_activation is not None
            else None,
            "memory_shape": None if self.memory_shape is None else list(self.memory_shape),
            "cell_input_fn": None
            if self.cell_input_fn is None
            else keras.saving.serialize_keras_object(self.cell_input_fn),
        }


def _check_memory_shape(value):
    if value is None:
        return None
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and (value[0] is None or (isinstance(value[0], int) and value[0] > 0))
        and isinstance(value[1], int)
        and value[1] > 0
    )
    if not ok:
        raise ValueError(
            "`memory_shape` must be (Tv, Dv) with a positive Dv and a positive "
            f"or None Tv. Received: memory_shape={value!r}"
        )
    return (value[0], value[1])
