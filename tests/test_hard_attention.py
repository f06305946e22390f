"""attnkit.layers.HardAttention: Gumbel straight-through and top-k."""

import keras
import numpy as np
import pytest
from test_local_attention import _gradients

from attnkit.layers import HardAttention
from attnkit.testing.contract import run_layer_contract
from attnkit.testing.reference import reference_topk_weights

B, TQ, TV, D = 2, 4, 7, 6


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, TQ, D)).astype("float32"),
        rng.normal(size=(B, TV, D)).astype("float32"),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "topk", "k": 2, "score_mode": "general"},
        {"method": "gumbel", "temperature": 0.5, "seed": 3},
    ],
    ids=["topk_general", "gumbel"],
)
def test_contract(kwargs):
    run_layer_contract(
        HardAttention,
        kwargs,
        [(B, TQ, D), (B, TV, D)],
        expected_output_shape=(B, TQ, D),
        expected_scores_shape=(B, TQ, TV),
        mask_input=0,
    )


def test_inference_is_deterministic_argmax():
    q, v = _data()
    layer = HardAttention(seed=1)
    out, a = layer([q, v], return_attention_scores=True)
    out2, a2 = layer([q, v], training=False, return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(a2))
    best = np.einsum("bqd,bkd->bqk", q, v).argmax(-1)
    np.testing.assert_array_equal(to_numpy(a), np.eye(TV)[best])
    np.testing.assert_allclose(to_numpy(out), np.take_along_axis(v, best[..., None], 1), atol=1e-6)


def test_gumbel_training_is_one_hot_seeded_and_noisy():
    q, v = _data()
    draws = []
    for _ in range(2):
        layer = HardAttention(seed=5, temperature=0.7)
        draws.append(
            [
                to_numpy(layer([q, v], training=True, return_attention_scores=True)[1])
                for _ in range(4)
            ]
        )
    for a in draws[0]:
        assert set(np.unique(a)) == {0.0, 1.0}
        np.testing.assert_array_equal(a.sum(-1), 1.0)
    for a, b in zip(*draws, strict=True):  # same seed, same draws
        np.testing.assert_array_equal(a, b)
    # The noise changes some choice over 4 draws of 8 rows.
    assert any(not np.array_equal(draws[0][0], a) for a in draws[0][1:])


def test_gumbel_gradients_are_soft_nonzero_and_finite():
    q, v = _data()
    layer = HardAttention(score_mode="general", seed=2)
    layer([q, v])
    q, v = keras.ops.convert_to_tensor(q), keras.ops.convert_to_tensor(v)
    target = keras.ops.convert_to_tensor(
        np.random.default_rng(1).normal(size=(B, TQ, D)).astype("float32")
    )
    grads = _gradients(layer, lambda: keras.ops.sum((layer([q, v], training=True) - target) ** 2))
    g = grads["kernel"]
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-6


def test_topk_keeps_k_renormalised_and_has_gradients():
    q, v = _data()
    layer = HardAttention(method="topk", k=3, score_mode="general")
    out, a = layer([q, v], return_attention_scores=True)
    a = to_numpy(a)
    np.testing.assert_array_equal((a > 0).sum(-1), 3)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-6)
    scores = np.einsum("bqd,de,bke->bqk", q, to_numpy(layer.kernel), v).astype(np.float64)
    np.testing.assert_allclose(a, reference_topk_weights(scores, 3), atol=1e-5)
    qt, vt = keras.ops.convert_to_tensor(q), keras.ops.convert_to_tensor(v)
    grads = _gradients(layer, lambda: keras.ops.sum(layer([qt, vt]) ** 2))
    assert np.all(np.isfinite(grads["kernel"])) and np.abs(grads["kernel"]).max() > 1e-6


@pytest.mark.parametrize("method", ["gumbel", "topk"])
@pytest.mark.parametrize("training", [False, True])
def test_masks_never_chosen_and_empty_rows_zero(method, training):
    q, v = _data()
    q = q * 10
    value_mask = np.ones((B, TV), bool)
    value_mask[0, :5] = False
    value_mask[1] = False  # nothing to attend to
    query_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    layer = HardAttention(method=method, k=1 if method == "gumbel" else 3, seed=0)
    out, a = layer(
        [q, v],
        mask=[query_mask, value_mask],
        training=training,
        return_attention_scores=True,
    )
    out, a = to_numpy(out), to_numpy(a)
    assert np.isfinite(out).all() and np.isfinite(a).all()
    np.testing.assert_array_equal(a[0][:, :5], 0.0)
    np.testing.assert_array_equal(a[0, 3], 0.0)
    np.testing.assert_array_equal(out[0, 3], 0.0)
    np.testing.assert_array_equal(a[1], 0.0)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_allclose(a[0, :3].sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "reinforce"}, "Received: method='reinforce'"),
        ({"temperature": 0}, "Received: temperature=0"),
        ({"method": "topk", "k": 0}, "Received: k=0"),
        ({"method": "gumbel", "k": 2}, "Received: k=2"),
        ({"score_mode": "concat"}, "Received: score_mode='concat'"),
        ({"seed": 1.5}, "Received: seed=1.5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HardAttention(**kwargs)
