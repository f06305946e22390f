"""ForwardAttention: float64 step, α_0, forward-only moves, cell stepping."""

import keras
import numpy as np
import pytest
from keras import ops

from attnkit.layers import AttentionRNNCell, ForwardAttention
from attnkit.ops import alignment
from attnkit.testing.reference import reference_forward_attention


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


@pytest.mark.parametrize("with_u", [False, True])
def test_step_matches_float64(with_u):
    rng = np.random.default_rng(0)
    e = rng.normal(size=(3, 6))
    prev = rng.dirichlet(np.ones(6), size=3)
    u = rng.uniform(size=(3, 1)) if with_u else None
    got = alignment.forward_attention(
        e.astype("float32"),
        prev.astype("float32"),
        None,
        None if u is None else u.astype("float32"),
    )
    np.testing.assert_allclose(to_np(got), reference_forward_attention(e, prev, u=u), atol=1e-6)


def test_hand_computed_first_step():
    # α̂_0 = [1, 0, 0], u_0 = 0.5, uniform y: prior [0.5, 0.5, 0] -> α̂_1 = [0.5, 0.5, 0].
    got = alignment.forward_attention(
        np.zeros((1, 3), "float32"),
        np.array([[1.0, 0, 0]], "float32"),
        None,
        np.array([[0.5]], "float32"),
    )
    np.testing.assert_allclose(to_np(got), [[0.5, 0.5, 0.0]], atol=1e-7)


def test_underflowing_softmax_keeps_mass():
    # y_t is ~0 where the prior is (e = -200 vs 0 elsewhere); the result is still a distribution.
    e = np.array([[-200.0, -200.0, 0.0, 0.0]], "float32")
    got = to_np(alignment.forward_attention(e, np.array([[1.0, 0, 0, 0]], "float32")))
    np.testing.assert_allclose(got.sum(), 1.0, atol=1e-6)
    assert np.all(got[0, 2:] == 0)


@pytest.mark.parametrize("transition_agent", [True, False])
def test_cell_forward_only(transition_agent):
    rng = np.random.default_rng(1)
    memory = rng.normal(size=(2, 7, 4)).astype("float32")
    targets = rng.normal(size=(2, 5, 3)).astype("float32")
    mask = np.arange(7)[None] < np.array([[7], [5]])
    cell = AttentionRNNCell(
        keras.layers.LSTMCell(4),
        ForwardAttention(5, transition_agent=transition_agent),
        alignment_history=True,
    )
    state = cell.get_initial_state(memory=memory, memory_mask=mask)
    np.testing.assert_array_equal(to_np(cell.state_alignment(state)), np.eye(7)[[0, 0]])
    if transition_agent:
        np.testing.assert_array_equal(to_np(state[-3]), 0.5)  # u_0
    out = keras.layers.RNN(cell, return_sequences=True)(targets, initial_state=state)
    s, steps = state, []
    for t in range(5):
        y, s = cell(targets[:, t], s)
        steps.append(to_np(y))
    np.testing.assert_allclose(np.stack(steps, 1), to_np(out), atol=1e-6)
    align = to_np(cell.split_output(out)[1])  # (B, Ty, Tx)
    np.testing.assert_allclose(align.sum(-1), 1.0, atol=1e-5)
    prev = np.eye(7)[[0, 0]]
    for t in range(5):
        reach = (prev > 0) | (np.concatenate([np.zeros((2, 1)), prev[:, :-1]], -1) > 0)
        assert np.all(align[:, t][~reach] == 0)  # mass moves forward by at most one
        prev = align[:, t]
    assert np.all(align[1, :, 5:] == 0)


def test_standalone_contract_and_errors():
    from attnkit.testing import run_layer_contract

    run_layer_contract(
        ForwardAttention,
        {"units": 4},
        [(2, 3, 4), (2, 5, 6)],
        expected_output_shape=(2, 3, 6),
        expected_scores_shape=(2, 3, 5),
        mask_input=0,
    )
    with pytest.raises(ValueError, match="Received: units=0"):
        ForwardAttention(0)
    with pytest.raises(ValueError, match="Received: transition_agent=1"):
        ForwardAttention(3, transition_agent=1)
