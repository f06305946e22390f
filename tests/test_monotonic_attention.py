"""MonotonicAttention: float64 recurrence, parallel == recursive, hard mode, cell stepping."""

import keras
import numpy as np
import pytest
from keras import ops

from attnkit.layers import AttentionRNNCell, MonotonicAttention
from attnkit.ops import alignment
from attnkit.testing.reference import reference_monotonic_expected


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


@pytest.mark.parametrize("seed", [0, 1])
def test_parallel_recursive_and_reference_agree(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, size=(3, 7)).astype("float32")
    prev = rng.dirichlet(np.ones(7), size=3).astype("float32") * 0.9
    want = reference_monotonic_expected(p, prev)
    rec = to_np(alignment.monotonic_recursive(p, prev))
    par = to_np(alignment.monotonic_parallel(p, prev))
    np.testing.assert_allclose(rec, want, atol=1e-6)
    np.testing.assert_allclose(par, want, atol=1e-5)
    assert np.all(rec.sum(-1) <= prev.sum(-1) + 1e-6)


def test_hand_computed_expected_step():
    # α_0 = [1, 0, 0], p = [0.5, 0.5, 1]: q = [1, 0.5, 0.25], α = [0.5, 0.25, 0.25].
    p = np.array([[0.5, 0.5, 1.0]], "float32")
    prev = np.array([[1.0, 0.0, 0.0]], "float32")
    np.testing.assert_allclose(to_np(alignment.monotonic_recursive(p, prev)), [[0.5, 0.25, 0.25]])
    np.testing.assert_allclose(
        to_np(alignment.monotonic_parallel(p, prev)), [[0.5, 0.25, 0.25]], atol=1e-7
    )


def test_hand_computed_hard_step():
    p = np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]], "float32")
    prev = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], "float32")
    np.testing.assert_array_equal(
        to_np(alignment.monotonic_hard(p, prev)), [[0, 0, 1, 0], [0, 0, 0, 0]]
    )


def _run(mode, score="bahdanau", training=False, seed=0):
    keras.utils.set_random_seed(seed)  # the same weights for every mode
    rng = np.random.default_rng(seed)
    memory = rng.normal(size=(2, 6, 4)).astype("float32")
    targets = rng.normal(size=(2, 5, 3)).astype("float32")
    mask = np.arange(6)[None] < np.array([[6], [4]])
    mech = MonotonicAttention(
        units=5 if score == "bahdanau" else None,
        score=score,
        mode=mode,
        score_bias_init=0.5,
    )
    cell = AttentionRNNCell(keras.layers.GRUCell(4), mech, alignment_history=True)
    state = cell.get_initial_state(memory=memory, memory_mask=mask)
    out = keras.layers.RNN(cell, return_sequences=True)(
        targets, initial_state=state, training=training
    )
    s, steps = state, []
    for t in range(5):
        y, s = cell(targets[:, t], s, training=training)
        steps.append(to_np(y))
    np.testing.assert_allclose(np.stack(steps, 1), to_np(out), atol=1e-6)
    return cell, to_np(cell.split_output(out)[1]), mask


@pytest.mark.parametrize("score", ["bahdanau", "luong"])
def test_cell_modes(score):
    _, rec, mask = _run("recursive", score)
    _, par, _ = _run("parallel", score)
    np.testing.assert_allclose(par, rec, atol=1e-5)
    assert np.all(rec.sum(-1) <= 1 + 1e-6) and np.all(rec >= 0)
    assert np.all(rec[1, :, 4:] == 0)  # padded memory never attended
    _, hard, _ = _run("hard", score)
    positions = np.where(hard.sum(-1) > 0, hard.argmax(-1), 10**6)  # gone = past the end
    assert np.all(np.isin(hard, [0.0, 1.0]))
    assert np.all(np.diff(positions, axis=-1) >= 0)  # never moves backwards


def test_inference_mode_and_noise_only_in_training():
    mech = MonotonicAttention(
        units=3, mode="parallel", inference_mode="hard", sigmoid_noise=1.0, seed=3
    )
    q = np.ones((1, 2, 4), "float32")
    v = np.random.default_rng(0).normal(size=(1, 5, 4)).astype("float32")
    _, a_inf = mech([q, v], return_attention_scores=True, training=False)
    assert np.all(np.isin(to_np(a_inf), [0.0, 1.0]))
    _, a1 = mech([q, v], return_attention_scores=True, training=True)
    _, a2 = mech([q, v], return_attention_scores=True, training=True)
    assert not np.allclose(to_np(a1), to_np(a2))  # fresh noise each call
    assert not np.all(np.isin(to_np(a1), [0.0, 1.0]))


def test_standalone_contract():
    from attnkit.testing import run_layer_contract

    run_layer_contract(
        MonotonicAttention,
        {"units": 4, "mode": "recursive"},
        [(2, 3, 4), (2, 5, 6)],
        expected_output_shape=(2, 3, 6),
        expected_scores_shape=(2, 3, 5),
        mask_input=0,
    )


def test_errors():
    with pytest.raises(ValueError, match="Received: mode='soft'"):
        MonotonicAttention(units=3, mode="soft")
    with pytest.raises(ValueError, match="Received: score='dot'"):
        MonotonicAttention(units=3, score="dot")
    with pytest.raises(ValueError, match="Received: units=None"):
        MonotonicAttention()
    with pytest.raises(ValueError, match="Received: units=3"):
        MonotonicAttention(units=3, score="luong")
    with pytest.raises(ValueError, match="Received: sigmoid_noise=-1"):
        MonotonicAttention(units=3, sigmoid_noise=-1)
    with pytest.raises(ValueError, match="Received: inference_mode='x'"):
        MonotonicAttention(units=3, inference_mode="x")
    with pytest.raises(ValueError, match="Received: score_bias_init='a'"):
        MonotonicAttention(units=3, score_bias_init="a")
    with pytest.raises(ValueError, match="seed.*Received: seed=1.5"):
        MonotonicAttention(units=3, sigmoid_noise=1.0, seed=1.5)


def test_sigmoid_noise_trains_inside_the_rnn_loop_on_every_backend():
    """model.fit through keras.layers.RNN (a lax.scan on JAX) with pre-sigmoid noise."""
    tx, ty = 5, 4
    x = keras.Input((tx,), dtype="int32")
    y_in = keras.Input((ty,), dtype="int32")
    e = keras.layers.Embedding(7, 4, mask_zero=True)(x)
    memory = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True))(e)
    mech = MonotonicAttention(4, sigmoid_noise=1.0, seed=3)
    cell = AttentionRNNCell(keras.layers.LSTMCell(8), mech, attention_layer_size=6)
    state = cell.get_initial_state(memory=memory, memory_mask=ops.not_equal(x, 0))
    h = keras.layers.RNN(cell, return_sequences=True)(
        keras.layers.Embedding(7, 4)(y_in), initial_state=state
    )
    model = keras.Model([x, y_in], keras.layers.Dense(7, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    xs = rng.integers(1, 7, size=(16, tx)).astype("int32")
    ys = rng.integers(1, 7, size=(16, ty)).astype("int32")
    history = model.fit([xs, ys], ys, epochs=3, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Noise in training only: two training calls differ, inference repeats.
    t1, t2 = (to_np(model([xs, ys], training=True)) for _ in range(2))
    assert not np.allclose(t1, t2)
    p1, p2 = (model.predict([xs, ys], verbose=0) for _ in range(2))
    np.testing.assert_array_equal(p1, p2)
    # Within one sequence the noise is fresh at every step: the standalone
    # layer on a constant query gives different noisy energies per step.
    q = np.ones((1, 6, 4), "float32")
    v = rng.normal(size=(1, 5, 4)).astype("float32")
    noisy = MonotonicAttention(3, mode="recursive", sigmoid_noise=2.0, seed=0, score_bias_init=0.0)
    _, a = noisy([q, v], return_attention_scores=True, training=True)
    quiet = MonotonicAttention(3, mode="recursive", seed=0, score_bias_init=0.0)
    quiet([q, v])
    quiet.set_weights(noisy.get_weights())
    _, b = quiet([q, v], return_attention_scores=True, training=True)
    assert not np.allclose(to_np(a), to_np(b))
