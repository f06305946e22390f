"""AttentionRNNCell: float64 reference step, RNN == stepping, and the layer contract.

``run_layer_contract`` runs a cell through ``keras.layers.RNN`` with its memory
in ``initial_state``, on the registry's example (``attnkit.testing.registry``,
checked in ``test_portability``). ``test_contract_*`` here run the same checks on
a whole encoder-decoder model: config round trip, symbolic == eager shapes,
.keras save/reload (safe mode, no custom_objects) with identical outputs, one
fit step lowers the loss, mixed precision keeps float32 weights with finite
outputs, and the decoder mask passes through.
"""

import os

import keras
import numpy as np
import pytest
from keras import ops

from attnkit.layers import AttentionRNNCell, BahdanauAttention, LuongAttention
from attnkit.testing.reference import (
    reference_bahdanau_energies,
    reference_gru_step,
    reference_luong_energies,
    reference_masked_softmax,
)

B, TY, TX, DX, DM = 2, 4, 5, 3, 6


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def _mechanism(name):
    return {
        "luong_general": lambda: LuongAttention(score_mode="general", use_scale=True),
        "luong_dot": lambda: LuongAttention(score_mode="dot"),
        "bahdanau": lambda: BahdanauAttention(units=4),
        "bahdanau_norm": lambda: BahdanauAttention(units=4, normalize=True),
    }[name]()


def _data(seed=0):
    rng = np.random.default_rng(seed)
    memory = rng.normal(size=(B, TX, DM)).astype("float32")
    targets = rng.normal(size=(B, TY, DX)).astype("float32")
    mask = np.arange(TX)[None, :] < np.array([[TX], [3]])
    return memory, targets, mask


def _reference_energies(mech, query, memory):
    """The paper's energies in float64 from the layer's weights."""
    w = {v.name: to_np(v) for v in mech.weights}
    if isinstance(mech, LuongAttention):
        kernel = w["memory_kernel"] if mech.score_mode == "general" else None
        return reference_luong_energies(query, memory, kernel, w.get("scale", 1.0))
    return reference_bahdanau_energies(
        query,
        memory,
        w["query_kernel"],
        w["memory_kernel"],
        w["attention_v"],
        g=w["attention_g"] if mech.normalize else None,
        b=w["attention_b"] if mech.normalize else None,
    )


def _reference_gru_run(cell, memory, targets, mask):
    """Whole decoder in float64 NumPy: GRU (Keras' reset_after form) + attention."""
    inner = cell.cell
    kernel, rec, bias = (to_np(v) for v in inner.weights)
    wa = to_np(cell.attention_layer.kernel)
    units = inner.units
    h = np.zeros((B, units))
    att = np.zeros((B, wa.shape[1]))
    outs, aligns = [], []
    for t in range(TY):
        x = np.concatenate([targets[:, t], att], -1)
        h = reference_gru_step(x, h, kernel, rec, bias)
        alpha = reference_masked_softmax(_reference_energies(cell.mechanism, h, memory), mask)
        context = np.einsum("bk,bkd->bd", alpha, memory)
        att = np.tanh(np.concatenate([h, context], -1) @ wa)
        outs.append(att)
        aligns.append(alpha)
    return np.stack(outs, 1), np.stack(aligns, 1)


@pytest.mark.parametrize("name", ["luong_general", "luong_dot", "bahdanau", "bahdanau_norm"])
def test_matches_float64_reference_and_stepping(name):
    memory, targets, mask = _data()
    cell = AttentionRNNCell(
        keras.layers.GRUCell(DM),
        _mechanism(name),
        attention_layer_size=5,
        attention_activation="tanh",
        alignment_history=True,
    )
    state = cell.get_initial_state(memory=memory, memory_mask=mask)
    out = keras.layers.RNN(cell, return_sequences=True)(targets, initial_state=state)
    outputs, alignments = cell.split_output(out)
    want_out, want_align = _reference_gru_run(cell, memory.astype(np.float64), targets, mask)
    np.testing.assert_allclose(to_np(alignments), want_align, atol=2e-5)
    np.testing.assert_allclose(to_np(outputs), want_out, atol=2e-5)
    assert np.all(to_np(alignments)[1, :, 3:] == 0)  # padded memory is never attended
    # One step at a time == the whole sequence.
    s, steps = state, []
    for t in range(TY):
        y, s = cell(targets[:, t], s)
        steps.append(to_np(y))
    np.testing.assert_allclose(np.stack(steps, 1), to_np(out), atol=1e-6)


def test_hand_computed_dot_step():
    # Query = LSTM output; with zero weights and bias the output is 0.5·tanh(0) = 0,
    # so dot energies are all 0 and the alignment is uniform over the visible keys.
    cell = AttentionRNNCell(
        keras.layers.SimpleRNNCell(2, kernel_initializer="zeros", recurrent_initializer="zeros"),
        LuongAttention(score_mode="dot"),
    )
    memory = np.array([[[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]], "float32")
    state = cell.get_initial_state(memory=memory, memory_mask=np.array([[True, True, False]]))
    out, new = cell(np.ones((1, 1), "float32"), state)
    np.testing.assert_allclose(to_np(cell.state_alignment(new)), [[0.5, 0.5, 0.0]], atol=1e-7)
    np.testing.assert_allclose(to_np(out), [[0.5, 0.5]], atol=1e-7)


@pytest.mark.parametrize("cell_cls", [keras.layers.LSTMCell, keras.layers.SimpleRNNCell])
def test_fully_masked_memory_gives_zeros_not_nan(cell_cls):
    memory, targets, _ = _data()
    cell = AttentionRNNCell(cell_cls(4), BahdanauAttention(3), alignment_history=True)
    state = cell.get_initial_state(memory=memory, memory_mask=np.zeros((B, TX), bool))
    out = to_np(keras.layers.RNN(cell, return_sequences=True)(targets, initial_state=state))
    assert np.all(np.isfinite(out)) and np.all(out == 0)


def test_state_is_packed_and_unpacked_in_one_order():
    # state_size, get_initial_state, call and state_alignment share _pack_state/_unpack_state.
    from attnkit.layers import LocationSensitiveAttention

    memory, targets, mask = _data()
    cell = AttentionRNNCell(
        keras.layers.LSTMCell(4),
        LocationSensitiveAttention(3, filters=2, kernel_size=3),  # one mechanism state
        attention_layer_size=5,
        alignment_history=True,
    )
    states = cell.get_initial_state(memory=memory, memory_mask=mask)
    assert [tuple(s.shape)[1] for s in states] == list(cell.state_size)
    state = cell._unpack_state(states)
    packed = cell._pack_state(state)
    assert len(packed) == len(states)
    assert all(a is b for a, b in zip(packed, states, strict=True))
    assert [len(state.cell_states), len(state.mechanism_states)] == [2, 1]
    assert tuple(state.attention.shape) == (B, 5) and tuple(state.memory.shape) == (B, TX * DM)
    np.testing.assert_array_equal(to_np(state.memory_mask), mask)
    _, new = cell(targets[:, 0], states)
    new_state = cell._unpack_state(new)
    assert cell.state_alignment(new) is new_state.alignment
    np.testing.assert_allclose(to_np(new_state.mechanism_states[0]), to_np(new_state.alignment))
    np.testing.assert_array_equal(to_np(new_state.memory), to_np(state.memory))


def _seq2seq(mechanism, vocab=7, alignment_history=False):
    x = keras.Input((TX,), dtype="int32")
    y_in = keras.Input((TY,), dtype="int32")
    e = keras.layers.Embedding(vocab, 4, mask_zero=True)(x)
    memory = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True))(e)
    cell = AttentionRNNCell(
        keras.layers.LSTMCell(8),
        mechanism,
        attention_layer_size=6,
        attention_activation="tanh",
        alignment_history=alignment_history,
    )
    state = cell.get_initial_state(memory=memory, memory_mask=ops.not_equal(x, 0))
    d = keras.layers.Embedding(vocab, 4, mask_zero=True)(y_in)
    h = keras.layers.RNN(cell, return_sequences=True)(d, initial_state=state)
    if alignment_history:
        h, _ = cell.split_output(h)
    probs = keras.layers.Dense(vocab, activation="softmax")(h)
    return keras.Model([x, y_in], probs), cell


def _tokens(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 7, size=(4, TX)).astype("int32")
    x[1, 3:] = 0
    y = rng.integers(1, 7, size=(4, TY)).astype("int32")
    return x, y


@pytest.mark.parametrize("alignment_history", [False, True])
def test_contract_encoder_decoder_save_reload_fit(tmp_path, alignment_history):
    model, cell = _seq2seq(
        BahdanauAttention(5, normalize=True), alignment_history=alignment_history
    )
    # Config round trip of the cell, nested cell and mechanism included.
    config = cell.get_config()
    revived = AttentionRNNCell.from_config(config)
    assert revived.get_config() == config
    x, y = _tokens()
    eager = model([x, y])
    assert tuple(model.outputs[0].shape)[1:] == tuple(eager.shape)[1:]
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_np(reloaded([x, y])), to_np(eager), atol=1e-6, rtol=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    before = float(model.evaluate([x, y], y, verbose=0))
    model.fit([x, y], y, epochs=3, batch_size=4, verbose=0, shuffle=False)
    after = float(model.evaluate([x, y], y, verbose=0))
    assert after < before


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_contract_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    model, cell = _seq2seq(LuongAttention("general"))
    x, y = _tokens()
    out = to_np(ops.cast(model([x, y]), "float32"))
    assert np.all(np.isfinite(out))
    for w in cell.weights:
        assert keras.backend.standardize_dtype(w.dtype) == "float32", w.path


def test_decoder_mask_keeps_state_on_padded_steps():
    memory, targets, _ = _data()
    cell = AttentionRNNCell(keras.layers.GRUCell(4), LuongAttention("general"))
    state = cell.get_initial_state(memory=memory)
    step_mask = np.array([[True, True, False, False], [True] * TY])
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    out = rnn(targets, initial_state=state, mask=step_mask)
    last_states = out[1:]
    _, s1 = cell(targets[:, 0], state)
    _, s2 = cell(targets[:, 1], s1)
    np.testing.assert_allclose(to_np(last_states[0])[0], to_np(s2[0])[0], atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="Received: cell="):
        AttentionRNNCell("lstm", BahdanauAttention(3))
    with pytest.raises(ValueError, match="Received: mechanism="):
        AttentionRNNCell(keras.layers.LSTMCell(3), keras.layers.Dense(3))
    with pytest.raises(ValueError, match="Received: dropout=0.5"):
        AttentionRNNCell(keras.layers.LSTMCell(3, dropout=0.5), BahdanauAttention(3))
    with pytest.raises(ValueError, match="Received: attention_layer_size=0"):
        AttentionRNNCell(keras.layers.LSTMCell(3), BahdanauAttention(3), attention_layer_size=0)
    with pytest.raises(ValueError, match="Received: memory_shape="):
        AttentionRNNCell(keras.layers.LSTMCell(3), BahdanauAttention(3), memory_shape=(4,))
    cell = AttentionRNNCell(keras.layers.LSTMCell(3), BahdanauAttention(3))
    with pytest.raises(ValueError, match="Received: memory_shape=None"):
        keras.layers.RNN(cell)
    with pytest.raises(ValueError, match="Received: memory=None"):
        cell.get_initial_state(batch_size=2)
    cell.get_initial_state(memory=np.zeros((2, 5, 4), "float32"))
    with pytest.raises(ValueError, match=r"Received: memory.shape=\(2, 5, 3\)"):
        cell.get_initial_state(memory=np.zeros((2, 5, 3), "float32"))
    with pytest.raises(ValueError, match="Received: alignment_history=False"):
        cell.split_output(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="Received: score_mode='concat'"):
        LuongAttention(score_mode="concat")
    with pytest.raises(ValueError, match="Received: units=0"):
        BahdanauAttention(units=0)
    dot = AttentionRNNCell(keras.layers.LSTMCell(3), LuongAttention("dot"))
    dot.get_initial_state(memory=np.zeros((2, 5, 4), "float32"))
    with pytest.raises(ValueError, match="needs equal sizes"):
        dot.build((None, 2))


@pytest.mark.parametrize("name", ["luong_general", "bahdanau"])
def test_mechanism_standalone_contract(name):
    from attnkit.testing import run_layer_contract

    cls = type(_mechanism(name))
    kwargs = _mechanism(name).get_config()
    kwargs = {
        k: v for k, v in kwargs.items() if k in ("score_mode", "use_scale", "units", "normalize")
    }
    run_layer_contract(
        cls,
        kwargs,
        [(2, 3, 4), (2, 5, 6)],
        expected_output_shape=(2, 3, 6),
        expected_scores_shape=(2, 3, 5),
        mask_input=0,
    )


@keras.saving.register_keras_serializable(package="attnkit_tests")
def scaled_sum_input(inputs, attention):
    """A custom cell input: [x_t; x_t + a_{t-1}[:Di]·0.5] (Di <= A)."""
    width = ops.shape(inputs)[-1]
    return ops.concatenate([inputs, inputs + 0.5 * attention[:, :width]], axis=-1)


def test_cell_input_fn_replaces_the_concatenation(tmp_path):
    memory, targets, mask = _data()
    cell = AttentionRNNCell(
        keras.layers.GRUCell(5),
        BahdanauAttention(units=4),
        attention_layer_size=6,
        attention_activation="tanh",
        cell_input_fn=scaled_sum_input,
    )
    state = cell.get_initial_state(memory=memory, memory_mask=mask)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    out = to_np(rnn(targets, initial_state=state))
    assert tuple(cell.cell.weights[0].shape) == (2 * DX, 15)  # GRU kernel sees (B, 2·Di)
    # Stepping by hand with the same function reproduces the sequence.
    states = cell.get_initial_state(memory=memory, memory_mask=mask)
    n_cell = len(cell._cell_state_sizes)
    for t in range(TY):
        att = to_np(states[1 + n_cell])
        expected_input = np.concatenate([targets[:, t], targets[:, t] + 0.5 * att[:, :DX]], -1)
        got_input = to_np(
            cell._cell_input(ops.convert_to_tensor(targets[:, t]), states[1 + n_cell])
        )
        np.testing.assert_allclose(got_input, expected_input, atol=1e-6)
        step_out, states = cell(ops.convert_to_tensor(targets[:, t]), states)
        np.testing.assert_allclose(to_np(step_out), out[:, t], atol=1e-5)
    # The function is saved by its registered name and reloads in safe mode.
    x = keras.Input((TY, DX))
    m_in = keras.Input((TX, DM))
    init = cell.get_initial_state(memory=m_in)
    model = keras.Model(
        [x, m_in], keras.layers.RNN(cell, return_sequences=True)(x, initial_state=init)
    )
    path = os.path.join(tmp_path, "fn.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        to_np(reloaded([targets, memory])), to_np(model([targets, memory])), atol=1e-6
    )
    assert cell.get_config()["cell_input_fn"] is not None


def test_cell_input_fn_errors():
    with pytest.raises(ValueError, match="Received: cell_input_fn=3"):
        AttentionRNNCell(keras.layers.GRUCell(5), BahdanauAttention(4), cell_input_fn=3)
    flat = AttentionRNNCell(
        keras.layers.GRUCell(5),
        BahdanauAttention(4),
        cell_input_fn=lambda inputs, attention: ops.sum(inputs, axis=-1),  # (B,): wrong rank
    )
    memory, targets, mask = _data()
    state = flat.get_initial_state(memory=memory, memory_mask=mask)
    with pytest.raises(ValueError, match=r"`cell_input_fn` must return a \(B, Dc\).*shape \(1,\)"):
        keras.layers.RNN(flat)(targets, initial_state=state)
