"""LocationSensitiveAttention: float64 step with convolved alignments, cell stepping."""

import keras
import numpy as np
import pytest
from keras import ops

from attnkit.layers import AttentionRNNCell, LocationSensitiveAttention
from attnkit.ops import alignment
from attnkit.testing.reference import reference_location_features, reference_masked_softmax


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


@pytest.mark.parametrize("kernel_size", [3, 4])
def test_location_features_match_float64(kernel_size):
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(2, 7))
    kernel = rng.normal(size=(kernel_size, 1, 3))
    got = alignment.location_features(a.astype("float32"), kernel.astype("float32"))
    np.testing.assert_allclose(to_np(got), reference_location_features(a, kernel), atol=1e-5)


@pytest.mark.parametrize("cumulative", [True, False])
def test_cell_matches_float64_and_stepping(cumulative):
    rng = np.random.default_rng(2)
    memory = rng.normal(size=(2, 6, 4)).astype("float32")
    targets = rng.normal(size=(2, 4, 3)).astype("float32")
    mask = np.arange(6)[None] < np.array([[6], [4]])
    mech = LocationSensitiveAttention(5, filters=2, kernel_size=3, cumulative=cumulative)
    cell = AttentionRNNCell(keras.layers.SimpleRNNCell(4), mech, alignment_history=True)
    state = cell.get_initial_state(memory=memory, memory_mask=mask)
    out = keras.layers.RNN(cell, return_sequences=True)(targets, initial_state=state)
    s, steps, queries = state, [], []
    for t in range(4):
        y, s = cell(targets[:, t], s)
        steps.append(to_np(y))
        queries.append(to_np(s[1]))  # the SimpleRNN state = its output = the query
    np.testing.assert_allclose(np.stack(steps, 1), to_np(out), atol=1e-6)
    align = to_np(cell.split_output(out)[1])
    w = {v.name: to_np(v) for v in mech.weights}
    source = np.zeros((2, 6))
    for t in range(4):
        f = reference_location_features(source, w["location_filters"]) @ w["location_kernel"]
        hidden = np.tanh(
            (queries[t] @ w["query_kernel"])[:, None] + memory @ w["memory_kernel"] + f
        )
        want = reference_masked_softmax(hidden @ w["attention_v"], mask)
        np.testing.assert_allclose(align[:, t], want, atol=2e-5)
        source = source + want if cumulative else want


def test_standalone_contract_and_errors():
    from attnkit.testing import run_layer_contract

    run_layer_contract(
        LocationSensitiveAttention,
        {"units": 4, "filters": 2, "kernel_size": 3, "smoothing": True},
        [(2, 3, 4), (2, 5, 6)],
        expected_output_shape=(2, 3, 6),
        expected_scores_shape=(2, 3, 5),
        mask_input=0,
    )
    with pytest.raises(ValueError, match="Received: filters=0"):
        LocationSensitiveAttention(3, filters=0)
    with pytest.raises(ValueError, match="Received: kernel_size=-1"):
        LocationSensitiveAttention(3, kernel_size=-1)
    with pytest.raises(ValueError, match="Received: cumulative=None"):
        LocationSensitiveAttention(3, cumulative=None)
