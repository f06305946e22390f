"""Raise sites not covered by the per-layer test files.

Each test reaches one `raise ValueError` through the public API and checks
that the message names the argument and shows the received value
(`Received: <name>=<value>`). See docs/ERRORS.md.
"""

import keras
import numpy as np
import pytest

from attnkit.layers import (
    AdditiveAttention,
    Attention,
    AttentionRNNCell,
    BahdanauAttention,
    HardAttention,
    LocalAttention,
    LuongAttention,
    MultiHeadAttention,
)


def t(*shape):
    return np.zeros(shape, dtype="float32")


# -- Attention / AdditiveAttention: _validate_inputs ----------------------------


@pytest.mark.parametrize("layer_cls", [Attention, AdditiveAttention])
@pytest.mark.parametrize(
    "inputs, received",
    [
        # ranks differ
        ((t(2, 5, 4), t(2, 5)), r"Received: input shapes=\[\(2, 5, 4\), \(2, 5\)\]"),
        # same rank, below 3
        ((t(5, 4), t(5, 4)), r"Received: input shapes=\[\(5, 4\), \(5, 4\)\]"),
        # key rank differs from query and value
        (
            (t(2, 5, 4), t(2, 6, 4), t(2, 1, 6, 4)),
            r"Received: input shapes=\[\(2, 5, 4\), \(2, 6, 4\), \(2, 1, 6, 4\)\]",
        ),
    ],
)
def test_attention_inputs_rank(layer_cls, inputs, received):
    with pytest.raises(ValueError, match=r"same rank, at least 3.*" + received):
        layer_cls()(list(inputs))


# -- LocalAttention: the [query, value] contract (layers/_query_value.py) -----


@pytest.mark.parametrize(
    "inputs, received",
    [
        ((t(2, 5, 4), t(2, 6, 3, 4)), r"Received: input shapes=\[\(2, 5, 4\), \(2, 6, 3, 4\)\]"),
        ((t(5, 4), t(6, 4)), r"Received: input shapes=\[\(5, 4\), \(6, 4\)\]"),
    ],
)
def test_local_attention_inputs_rank(inputs, received):
    with pytest.raises(ValueError, match=r"\(B, Tq, Dq\).*" + received):
        LocalAttention(window=2)(list(inputs))


@pytest.mark.parametrize(
    "mask, received",
    [
        ("query_mask", r"Received: mask='query_mask'"),
        ([None, None, None], r"Received: mask=\[None, None, None\]"),
    ],
)
def test_local_attention_mask_not_a_pair(mask, received):
    layer = LocalAttention(window=2)
    with pytest.raises(ValueError, match=r"\[query_mask, value_mask\]\. " + received):
        layer([t(2, 5, 4), t(2, 6, 4)], mask=mask)


# -- HardAttention ------------------------------------------------------------


@pytest.mark.parametrize("score_mode", ["dot", "scaled_dot"])
def test_hard_attention_feature_sizes(score_mode):
    layer = HardAttention(method="topk", score_mode=score_mode)
    with pytest.raises(
        ValueError,
        match=rf"score_mode='{score_mode}'.*Received: query.shape\[-1\]=4, value.shape\[-1\]=3",
    ):
        layer([t(2, 5, 4), t(2, 6, 3)])


# -- Attention mechanisms used on their own ------------------------------------


def test_mechanism_built_on_a_single_shape():
    with pytest.raises(ValueError, match=r"\[query, value\].*Received: input_shape=\(2, 5, 4\)"):
        BahdanauAttention(units=3)(t(2, 5, 4))


def test_mechanism_inputs_and_masks():
    # The mechanisms share the [query, value(, inputs)] contract of layers/_query_value.py.
    q, v = t(2, 3, 4), t(2, 5, 6)
    with pytest.raises(
        ValueError,
        match=r"\[query, value\] or \[query, value, inputs\]\. Received: input_shape=\[",
    ):
        BahdanauAttention(units=3)([q, v, q, v])
    with pytest.raises(
        ValueError,
        match=r"expects query \(B, Tq, Dq\) and value \(B, Tv, Dv\)\. "
        r"Received: input shapes=\[\(2, 3, 4\), \(2, 1, 5, 6\)\]",
    ):
        BahdanauAttention(units=3)([q, t(2, 1, 5, 6)])
    layer = LuongAttention(score_mode="general")
    with pytest.raises(
        ValueError,
        match=r"\[query_mask, value_mask\] or \[query_mask, value_mask, inputs_mask\]\. "
        r"Received: mask='query_mask'",
    ):
        layer([q, v], mask="query_mask")
    query_mask = np.array([[True, True, False], [True, True, True]])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.compute_mask([q, v], [query_mask, None])), query_mask
    )
    assert layer.compute_mask([q, v], None) is None


def test_query_value_layers_take_exactly_their_inputs():
    q, v = t(2, 3, 4), t(2, 5, 4)
    with pytest.raises(ValueError, match=r"list \[query, value\]\. Received: inputs=\["):
        HardAttention()([q, v, v])
    with pytest.raises(ValueError, match=r"list \[query, value\]\. Received: inputs=\["):
        LocalAttention(window=2).compute_output_spec([q])


@pytest.mark.parametrize("layer_cls", [LocalAttention, HardAttention])
def test_output_spec_reads_the_call_arguments_by_name_or_position(layer_cls):
    # compute_output_spec binds its arguments to the layer's own call signature,
    # so return_attention_scores counts wherever the call takes it.
    layer = layer_cls(window=2) if layer_cls is LocalAttention else layer_cls()
    query, value = keras.Input((3, 4)), keras.Input((5, 4))
    out, weights = layer([query, value], return_attention_scores=True)
    assert tuple(out.shape) == (None, 3, 4) and tuple(weights.shape) == (None, 3, 5)
    positional = (None, True) if layer_cls is LocalAttention else (None, None, True)
    out, weights = layer.compute_output_spec([query, value], *positional)
    assert tuple(out.shape) == (None, 3, 4) and tuple(weights.shape) == (None, 3, 5)
    assert tuple(layer.compute_output_spec([query, value]).shape) == (None, 3, 4)


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="torch traces a symbolic call with a placeholder size, not an unknown one",
)
def test_mechanism_query_without_static_length():
    query = keras.Input(shape=(None, 4))
    value = keras.Input(shape=(6, 4))
    # TensorFlow traces None, JAX a symbolic dimension (named dynamic_dimension).
    unknown = "None" if keras.backend.backend() == "tensorflow" else "dynamic_dimension"
    with pytest.raises(
        ValueError,
        match=rf"static query length\. Received: query.shape=\({unknown}, {unknown}, 4\)",
    ):
        LuongAttention(score_mode="dot")([query, value])


# -- MultiHeadAttention ---------------------------------------------------------


@pytest.mark.parametrize(
    "query, value, received",
    [
        (
            t(2, 5, 8),
            t(2, 3, 6, 8),
            r"Received: query_shape=\(2, 5, 8\), value_shape=\(2, 3, 6, 8\)",
        ),
        (t(2, 8), t(2, 8), r"Received: query_shape=\(2, 8\), value_shape=\(2, 8\)"),
    ],
)
def test_mha_query_value_rank(query, value, received):
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match=r"same rank, at least 3\. " + received):
        layer(query, value)


def test_mha_cache_needs_standard_attention_axes():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=(2,))
    x = t(2, 3, 5, 8)
    cache = t(2, 2, 5, 2, 4)
    with pytest.raises(ValueError, match=r"key/value cache.*Received: attention_axes=\(2,\)"):
        layer(x, x, cache=cache)


def test_mha_compute_output_shape_key_value_mismatch():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    with pytest.raises(
        ValueError,
        match=r"except the last one.*Received: value_shape=\(2, 6, 8\) and key_shape=\(2, 7, 8\)",
    ):
        layer.compute_output_shape((2, 5, 8), (2, 6, 8), (2, 7, 8))


# -- AttentionRNNCell -------------------------------------------------------------


def test_rnn_cell_alignment_history_needs_static_memory_length():
    cell = AttentionRNNCell(
        keras.layers.GRUCell(4), BahdanauAttention(units=3), alignment_history=True
    )
    memory = keras.Input(shape=(None, 5))
    with pytest.raises(
        ValueError,
        match=r"alignment_history=True.*static memory length\. Received: memory_shape=\(None, 5\)",
    ):
        cell.get_initial_state(memory=memory)


def test_rnn_cell_memory_rank():
    cell = AttentionRNNCell(keras.layers.GRUCell(4), BahdanauAttention(units=3))
    with pytest.raises(ValueError, match=r"\(B, Tv, Dv\)\. Received: memory.shape=\(2, 5\)"):
        cell.get_initial_state(memory=t(2, 5))


@pytest.mark.parametrize("cell_state, count", [([t(2, 4)], 1), ([t(2, 4)] * 3, 3), (t(2, 4), 1)])
def test_rnn_cell_cell_state_count(cell_state, count):
    cell = AttentionRNNCell(keras.layers.LSTMCell(4), BahdanauAttention(units=3))
    with pytest.raises(
        ValueError, match=rf"`cell_state` must hold 2 tensors.*Received: len\(cell_state\)={count}"
    ):
        cell.get_initial_state(memory=t(2, 6, 5), cell_state=cell_state)


@pytest.mark.parametrize(
    "bad, received",
    [
        (None, r"Received: query=None"),
        ("abc", r"Received: query(='abc'|\.dtype=string)"),
        (object(), r"Received: query=<object object"),
        (np.zeros((1, 3, 4), "int32"), r"Received: query\.dtype=int32"),
    ],
)
def test_attention_rejects_what_is_not_a_float_tensor(bad, received):
    from attnkit.ops import attention

    kv = np.zeros((1, 3, 4), "float32")
    with pytest.raises(ValueError, match=r"`query` must be a floating-point tensor\. " + received):
        attention(bad, kv, kv)
    with pytest.raises(ValueError, match=r"`value` must be a floating-point tensor"):
        attention(kv, kv, bad)
