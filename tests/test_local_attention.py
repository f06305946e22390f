"""attnkit.layers.LocalAttention: Luong 2015 local-m and local-p."""

import keras
import numpy as np
import pytest

from attnkit.layers import Attention, LocalAttention
from attnkit.testing.contract import run_layer_contract
from attnkit.testing.reference import (
    reference_general_score,
    reference_local_attention,
    reference_predictive_positions,
)

B, TQ, TV, D = 2, 5, 9, 6


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def _data(seed=0, tq=TQ, tv=TV):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, tq, D)).astype("float32"),
        rng.normal(size=(B, tv, D)).astype("float32"),
    )


def reference_local(q, v, W, positions, window, sigma, mask):
    """Luong eq. 9-10 with the general score: softmax inside the window, Gaussian."""
    scores = reference_general_score(q, v, W)
    return reference_local_attention(scores, v, positions, window, sigma=sigma, mask=mask)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 2, "mode": "local-p"},
        {"window": 3, "mode": "local-m", "score_mode": "concat"},
    ],
    ids=["local_p", "local_m_concat"],
)
def test_contract(kwargs):
    run_layer_contract(
        LocalAttention,
        kwargs,
        [(B, TQ, D), (B, TV, D)],
        expected_output_shape=(B, TQ, D),
        expected_scores_shape=(B, TQ, TV),
        mask_input=0,
    )


@pytest.mark.parametrize("tq", [TQ, TV])
def test_local_m_matches_reference(tq):
    q, v = _data(tq=tq)
    value_mask = np.ones((B, TV), bool)
    value_mask[1, 6:] = False
    layer = LocalAttention(window=2, mode="local-m")
    out, a = layer([q, v], mask=[None, value_mask], return_attention_scores=True)
    positions = np.arange(tq) * (TV - 1) / (tq - 1)  # == t when Tq == Tv
    ref_out, ref_a = reference_local(
        q, v, to_numpy(layer.kernel), positions, 2, 1.0, value_mask[:, None, :]
    )
    np.testing.assert_allclose(to_numpy(a), ref_a, atol=1e-5)
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=1e-5)


def test_local_p_matches_reference_and_is_zero_outside_window():
    q, v = _data()
    value_mask = np.ones((B, TV), bool)
    value_mask[0, 7:] = False
    layer = LocalAttention(window=2, mode="local-p", position_units=4)
    layer([q, v])
    rng = np.random.default_rng(3)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    w = {x.name: to_numpy(x).astype(np.float64) for x in layer.weights}
    out, a = layer([q, v], mask=[None, value_mask], return_attention_scores=True)
    lengths = value_mask.sum(-1)[:, None]
    # S · sigmoid(v_pᵀ tanh(W_p h_t)), S the number of valid keys.
    positions = reference_predictive_positions(
        q, w["position_kernel"], w["position_vector"], lengths
    )
    ref_out, ref_a = reference_local(q, v, w["kernel"], positions, 2, 1.0, value_mask[:, None, :])
    np.testing.assert_allclose(to_numpy(a), ref_a, atol=1e-5)
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=1e-5)
    outside = np.abs(np.arange(TV)[None, None, :] - positions[:, :, None]) > 2
    assert outside.any()
    np.testing.assert_array_equal(to_numpy(a)[outside], 0.0)
    assert (to_numpy(a).sum(-1) < 1.0).all()  # not renormalised after the Gaussian


def test_local_m_with_wide_window_and_huge_sigma_is_global_attention():
    q, v = _data(tq=TV)
    local = LocalAttention(window=TV, mode="local-m", sigma=1e9)
    out, a = local([q, v], return_attention_scores=True)
    glob = Attention(score_mode="general")
    glob([q, v])
    glob.set_weights(local.get_weights())
    g_out, g_a = glob([q, v], return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(a), to_numpy(g_a), atol=1e-6)
    np.testing.assert_allclose(to_numpy(out), to_numpy(g_out), atol=1e-5)


def test_local_p_gradient_reaches_position_parameters():
    q, v = _data()
    layer = LocalAttention(window=2, mode="local-p")
    layer([q, v])
    q, v = keras.ops.convert_to_tensor(q), keras.ops.convert_to_tensor(v)
    target = keras.ops.convert_to_tensor(
        np.random.default_rng(1).normal(size=(B, TQ, D)).astype("float32")
    )
    grads = _gradients(layer, lambda: keras.ops.sum((layer([q, v]) - target) ** 2))
    for name in ("position_kernel", "position_vector"):
        g = grads[name]
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-6, name


def _gradients(layer, loss_fn):
    """{weight name: gradient} on the current backend."""
    variables = layer.trainable_variables
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def stateless(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return loss_fn()

        grads = jax.grad(stateless)([v.value for v in variables])
    elif backend == "torch":
        loss_fn().backward()
        grads = [v.value.grad for v in variables]
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_fn()
        grads = tape.gradient(value, [v.value for v in variables])
    return {
        v.name: np.zeros(v.shape) if g is None else to_numpy(g)
        for v, g in zip(variables, grads, strict=True)
    }


def test_padded_query_and_empty_window_give_zeros_not_nan():
    q, v = _data(tq=TV)
    query_mask = np.ones((B, TV), bool)
    query_mask[0, -2:] = False
    value_mask = np.ones((B, TV), bool)
    value_mask[1, :5] = False  # query 0 of sequence 1 sees no key in its window
    out, a = LocalAttention(window=1, mode="local-m")(
        [q, v], mask=[query_mask, value_mask], return_attention_scores=True
    )
    out, a = to_numpy(out), to_numpy(a)
    assert np.isfinite(out).all() and np.isfinite(a).all()
    np.testing.assert_array_equal(a[0, -2:], 0.0)
    np.testing.assert_array_equal(out[0, -2:], 0.0)
    np.testing.assert_array_equal(a[1, 0], 0.0)
    np.testing.assert_array_equal(a[1][:, ~value_mask[1]], 0.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"window": 0}, "Received: window=0"),
        ({"window": 2, "mode": "local"}, "Received: mode='local'"),
        ({"window": 2, "score_mode": "cosine"}, "Received: score_mode='cosine'"),
        ({"window": 2, "sigma": 0.0}, "Received: sigma=0.0"),
        ({"window": 2, "sigma": True}, "Received: sigma=True"),
        (
            {"window": 2, "mode": "local-m", "position_units": 3},
            "Received: position_units=3",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LocalAttention(**kwargs)


def test_bad_inputs():
    q, v = _data()
    with pytest.raises(ValueError, match="Received: inputs="):
        LocalAttention(window=2)(q)
    with pytest.raises(ValueError, match="Received: query.shape"):
        LocalAttention(window=2, score_mode="dot")([q, v[..., :3]])
