"""ScheduledSamplingCell: p = 0 is teacher forcing, p = 1 feeds back samples (against a
step-by-step loop), the coin flips' frequency, training under fit, errors."""

import keras
import numpy as np
import pytest
from keras import ops

from attnkit import sampling
from attnkit.layers import AttentionRNNCell, BahdanauAttention
from attnkit.layers.scheduled_sampling_cell import (
    ScheduledSamplingCell,
    _seed_and_counter,
    sampling_choice,
)

B, TX, DM, TY, V = 3, 5, 4, 4, 6


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _parts(p, seed=0):
    keras.utils.set_random_seed(seed)
    cell = AttentionRNNCell(keras.layers.GRUCell(8), BahdanauAttention(5), attention_layer_size=6)
    embedding = keras.layers.Embedding(V, 4)
    projection = keras.layers.Dense(
        V, kernel_initializer=keras.initializers.RandomNormal(stddev=1.5)
    )
    sched = ScheduledSamplingCell(cell, embedding, projection, sampling_probability=p, seed=3)
    rng = np.random.default_rng(seed)
    memory = rng.normal(size=(B, TX, DM)).astype("float32")
    mask = np.arange(TX)[None, :] < np.array([[5], [3], [4]])
    tokens = rng.integers(1, V, size=(B, TY)).astype("int32")
    return sched, memory, mask, tokens


def test_teacher_forcing_at_zero_and_in_inference_samples_fed_back_at_one():
    sched, memory, mask, tokens = _parts(1.0)
    state = sched.get_initial_state(memory=memory, memory_mask=mask)
    rnn = keras.layers.RNN(sched, return_sequences=True)
    inputs = sched.token_inputs(tokens)
    out = to_np(rnn(inputs, initial_state=state, training=True))
    # By hand: the ground truth at step 0, then a token drawn from the previous logits
    # with attnkit.sampling and the seeds of the initial state.
    seed, _ = _seed_and_counter(state[-1])
    cell_states, fed, want = list(state[1:-1]), tokens[:, 0], []
    for t in range(TY):
        h, cell_states = sched.cell(sched.embedding(fed), cell_states)
        logits = sched.projection(h)
        want.append(to_np(logits))
        fed = sampling.sample_tokens(logits, seed, t + 1)
    np.testing.assert_allclose(out, np.stack(want, 1), atol=1e-5)
    # Teacher forcing: the cell over the embedded ground truth.
    forced = keras.layers.RNN(sched.cell, return_sequences=True)(
        sched.embedding(tokens), initial_state=state[1:-1]
    )
    forced = to_np(sched.projection(forced))
    np.testing.assert_allclose(out[:, 0], forced[:, 0], atol=1e-6)
    assert np.abs(out[:, 1:] - forced[:, 1:]).max() > 1e-3  # p = 1 is not teacher forcing
    # The same tokens reach the same layers at p = 0 and outside training; JAX compiles
    # the loops as different programs, whose float32 fusion may round the last bit.
    np.testing.assert_allclose(
        to_np(rnn(inputs, initial_state=state, training=False)), forced, rtol=0, atol=1e-6
    )
    sched.probability.assign(0.0)
    np.testing.assert_allclose(
        to_np(rnn(inputs, initial_state=state, training=True)), forced, rtol=0, atol=1e-6
    )


def test_coin_flips_have_probability_p():
    seeds = ops.convert_to_tensor(np.arange(5000, dtype="int32") * 7919)
    like = ops.zeros((5000, 1))
    for p in (0.0, 0.3, 1.0):
        first = to_np(sampling_choice(seeds, ops.zeros((5000,), "int32"), p, like))
        later = to_np(sampling_choice(seeds, ops.full((5000,), 4, "int32"), p, like))
        assert not first.any()  # step 0 always feeds the ground truth
        assert abs(later.mean() - p) <= 4 * np.sqrt(p * (1 - p) / 5000) + 1e-9


def test_trains_under_fit_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    x = keras.Input((TX,), dtype="int32")
    y_in = keras.Input((TY,), dtype="int32")
    memory = keras.layers.Embedding(V, 4, mask_zero=True)(x)
    sched = ScheduledSamplingCell(
        AttentionRNNCell(keras.layers.GRUCell(8), BahdanauAttention(5)),
        keras.layers.Embedding(V, 4),
        keras.layers.Dense(V),
        sampling_probability=0.25,
        seed=1,
    )
    state = sched.get_initial_state(memory=memory, memory_mask=ops.not_equal(x, 0))
    logits = keras.layers.RNN(sched, return_sequences=True)(
        sched.token_inputs(y_in), initial_state=state
    )
    model = keras.Model([x, y_in], logits)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    xs = rng.integers(1, V, size=(16, TX)).astype("int32")
    ys = np.roll(xs[:, :TY], 1, axis=1)  # copy the source: learnable
    ys_in = np.concatenate([np.ones((16, 1), "int32"), ys[:, :-1]], 1)
    history = model.fit([xs, ys_in], ys, epochs=3, batch_size=16, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    config = sched.get_config()
    assert ScheduledSamplingCell.from_config(config).get_config() == config
    path = str(tmp_path / "scheduled.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)  # safe mode, no custom_objects
    np.testing.assert_allclose(
        to_np(reloaded([xs, ys_in])), to_np(model([xs, ys_in])), rtol=0, atol=1e-6
    )


def test_errors():
    cell = AttentionRNNCell(keras.layers.GRUCell(4), BahdanauAttention(3))
    emb, dense = keras.layers.Embedding(V, 4), keras.layers.Dense(V)
    for bad in (-0.1, 1.5, True):
        with pytest.raises(
            ValueError, match=f"`sampling_probability` must be .*sampling_probability={bad}"
        ):
            ScheduledSamplingCell(cell, emb, dense, sampling_probability=bad)
    with pytest.raises(ValueError, match="Received: projection="):
        ScheduledSamplingCell(cell, emb, keras.layers.ReLU())
    with pytest.raises(ValueError, match="Received: cell="):
        ScheduledSamplingCell("gru", emb, dense)
