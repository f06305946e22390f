"""attnkit.layers.AdditiveAttention: Keras' simplified form and Bahdanau's."""

import keras
import numpy as np
import pytest

from attnkit.layers import AdditiveAttention
from attnkit.testing.contract import run_layer_contract
from attnkit.testing.reference import reference_bahdanau_attention

ATOL = 1e-5
B, TQ, TV = 2, 4, 6


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def _data(dq=8, dv=8, dk=None, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, TQ, dq)).astype("float32")
    v = rng.normal(size=(B, TV, dv)).astype("float32")
    k = rng.normal(size=(B, TV, dk or dv)).astype("float32")
    return q, v, k


def _random_weights(layer, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]


@pytest.mark.parametrize(
    "kwargs,shapes",
    [
        ({}, [(B, TQ, 8), (B, TV, 8)]),
        ({"units": 6}, [(B, TQ, 5), (B, TV, 8)]),
        (
            {"units": 6, "use_bias": False, "sliding_window": 3},
            [(B, TQ, 5), (B, TV, 8), (B, TV, 3)],
        ),
    ],
    ids=["keras_form", "bahdanau", "bahdanau_key_window"],
)
def test_contract(kwargs, shapes):
    run_layer_contract(
        AdditiveAttention,
        kwargs,
        shapes,
        expected_output_shape=(B, TQ, shapes[1][-1]),
        expected_scores_shape=(B, TQ, TV),
        mask_input=0,
    )


@pytest.mark.parametrize("use_scale", [False, True])
@pytest.mark.parametrize("masking", ["none", "value", "causal", "all"])
def test_parity_with_keras(use_scale, masking):
    q, v, k = _data()
    ours = AdditiveAttention(use_scale=use_scale)
    theirs = keras.layers.AdditiveAttention(use_scale=use_scale)
    ours([q, v, k])
    theirs([q, v, k])
    theirs.set_weights(_random_weights(theirs))
    ours.set_weights(theirs.get_weights())
    query_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    value_mask = np.array([[1, 1, 1, 0, 0, 1], [1, 1, 1, 1, 1, 0]], bool)
    kwargs = {"return_attention_scores": True}
    if masking in ("value", "all"):
        kwargs["mask"] = [query_mask if masking == "all" else None, value_mask]
    if masking in ("causal", "all"):
        kwargs["use_causal_mask"] = True
    out, scores = ours([q, v, k], **kwargs)
    k_out, k_scores = theirs([q, v, k], **kwargs)
    np.testing.assert_allclose(to_numpy(out), to_numpy(k_out), atol=ATOL)
    valid = query_mask if masking == "all" else np.ones((B, TQ), bool)
    np.testing.assert_allclose(to_numpy(scores)[valid], to_numpy(k_scores)[valid], atol=ATOL)
    np.testing.assert_array_equal(to_numpy(scores)[~valid], 0.0)


def test_keras_form_weights_and_config_match_keras():
    q, v, _ = _data()
    theirs = keras.layers.AdditiveAttention(use_scale=True, dropout=0.1, seed=2)
    ours = AdditiveAttention.from_config(theirs.get_config())
    theirs([q, v])
    ours([q, v])
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights] == ["scale"]
    assert "score_mode" not in ours.get_config()


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_bahdanau_matches_reference(use_bias, causal):
    q, v, k = _data(dq=5, dv=7, dk=3)
    layer = AdditiveAttention(units=6, use_bias=use_bias)
    layer([q, v, k])
    weights = _random_weights(layer)
    layer.set_weights(weights)
    names = [w.name for w in layer.weights]
    assert names == ["query_kernel", "key_kernel"] + (["bias"] if use_bias else []) + ["scale"]
    named = dict(zip(names, weights, strict=True))
    value_mask = np.array([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]], bool)
    out, scores = layer(
        [q, v, k],
        mask=[None, value_mask],
        use_causal_mask=causal,
        return_attention_scores=True,
    )
    mask = np.broadcast_to(value_mask[:, None, :], (B, TQ, TV))
    if causal:
        mask = mask & np.tril(np.ones((TQ, TV), bool))
    ref_out, ref_w = reference_bahdanau_attention(
        q,
        k,
        v,
        named["query_kernel"],
        named["key_kernel"],
        named.get("bias", np.zeros(6)),
        named["scale"],
        mask,
    )
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), ref_w, atol=ATOL)


def test_bahdanau_without_scale_sums_tanh():
    q, v, k = _data(dq=5, dv=7, dk=3)
    layer = AdditiveAttention(units=4, use_scale=False)
    layer([q, v, k])
    w_q, w_k, bias = layer.get_weights()
    _, scores = layer([q, v, k], return_attention_scores=True)
    _, ref_w = reference_bahdanau_attention(
        q, k, v, w_q, w_k, bias, np.ones(4), np.ones((B, TQ, TV), bool)
    )
    np.testing.assert_allclose(to_numpy(scores), ref_w, atol=ATOL)


def test_paper_init_starts_uniform():
    q, v, _ = _data(dq=5, dv=7)
    layer = AdditiveAttention(units=64, paper_init=True)
    out, scores = layer([q, v], return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(scores), np.float32(1) / np.float32(TV))
    np.testing.assert_allclose(
        to_numpy(out), np.broadcast_to(v.mean(1, keepdims=True), (B, TQ, 7)), atol=1e-6
    )
    w_q, w_k, bias, scale = (to_numpy(w) for w in layer.weights)
    np.testing.assert_array_equal(scale, 0.0)
    np.testing.assert_array_equal(bias, 0.0)
    # N(0, 0.001²): 5·64 and 7·64 draws; the sample std is within 25% of 0.001.
    for kernel in (w_q, w_k):
        assert 0.00075 < kernel.std() < 0.00125 and abs(kernel.mean()) < 0.0003
    assert not np.allclose(w_q[:5], w_k[:5])  # two independent draws


def test_paper_init_learns():
    q, v, _ = _data(dq=5, dv=7)
    inputs = [keras.Input((TQ, 5)), keras.Input((TV, 7))]
    model = keras.Model(inputs, AdditiveAttention(units=8, paper_init=True)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    target = np.roll(v, 1, axis=1)[:, :TQ]
    before = model.evaluate([q, v], target, verbose=0)
    model.fit([q, v], target, epochs=3, batch_size=B, verbose=0)
    assert model.evaluate([q, v], target, verbose=0) < before


def test_implicit_masks_equal_explicit_masks():
    q_ids = np.array([[3, 4, 5, 0], [1, 2, 3, 4]])
    v_ids = np.array([[3, 4, 5, 6, 0, 0], [1, 2, 0, 4, 5, 6]])
    embedding = keras.layers.Embedding(10, 8, mask_zero=True)
    layer = AdditiveAttention(units=5)
    q_emb, v_emb = embedding(q_ids), embedding(v_ids)
    implicit, implicit_scores = layer([q_emb, v_emb], return_attention_scores=True)
    plain = [keras.ops.convert_to_tensor(to_numpy(x)) for x in (q_emb, v_emb)]
    explicit, explicit_scores = layer(
        plain, mask=[q_ids != 0, v_ids != 0], return_attention_scores=True
    )
    np.testing.assert_allclose(to_numpy(implicit), to_numpy(explicit), atol=1e-7)
    np.testing.assert_allclose(to_numpy(implicit_scores), to_numpy(explicit_scores), atol=1e-7)
    assert not np.allclose(to_numpy(layer(plain)), to_numpy(explicit))
    rows = to_numpy(explicit_scores).sum(-1)
    np.testing.assert_allclose(rows, (q_ids != 0).astype("float32"), atol=1e-6)


def test_symbolic_scores_shape():
    out, scores = AdditiveAttention(units=4)(
        [keras.Input((3, 6)), keras.Input((7, 5))], return_attention_scores=True
    )
    assert tuple(out.shape) == (None, 3, 5) and tuple(scores.shape) == (None, 3, 7)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"units": 0}, "Received: units=0"),
        ({"units": 2.5}, "Received: units=2.5"),
        ({"paper_init": True}, "Received: units=None"),
        (
            {"units": 4, "paper_init": True, "use_scale": False},
            "Received: use_scale=False",
        ),
        (
            {"units": 4, "paper_init": True, "kernel_initializer": "ones"},
            "Received: kernel_initializer='ones'",
        ),
        ({"kernel_initializer": "ones"}, "Received: kernel_initializer='ones'"),
        ({"score_mode": "dot"}, "Received: score_mode='dot'"),
        ({"use_bias": 1}, "Received: use_bias=1"),
        ({"dropout": 2}, "Received: dropout=2"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdditiveAttention(**kwargs)


def test_feature_sizes_must_match_without_units():
    q, v, _ = _data(dq=5, dv=8)
    with pytest.raises(ValueError, match=r"Received: query.shape\[-1\]=5, key.shape\[-1\]=8"):
        AdditiveAttention()([q, v])
