"""attnkit.layers.Attention: contract, float64 reference, parity with Keras."""

import keras
import numpy as np
import pytest

from attnkit.layers import Attention
from attnkit.testing.contract import run_layer_contract
from attnkit.testing.reference import (
    reference_attention,
    reference_concat_attention,
    reference_mask,
)

ATOL = 1e-5
B, TQ, TV, D = 2, 4, 6, 8


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def _data(seed=0, tq=TQ, tv=TV, d=D, batch=(B,)):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(*batch, tq, d)).astype("float32")
    v = rng.normal(size=(*batch, tv, d)).astype("float32")
    k = rng.normal(size=(*batch, tv, d)).astype("float32")
    return q, v, k


def _masks():
    query_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)
    value_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 1, 1, 1]], dtype=bool)
    return query_mask, value_mask


def _random_weights(layer, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]


# Contract -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"score_mode": "scaled_dot", "use_scale": True},
        {"score_mode": "general", "use_scale": True},
        {"score_mode": "cosine", "use_scale": True},
        {"score_mode": "concat", "use_scale": True, "sliding_window": 2},
    ],
    ids=["dot", "scaled_dot", "general", "cosine", "concat_window"],
)
def test_contract(kwargs):
    run_layer_contract(
        Attention,
        kwargs,
        [(B, TQ, D), (B, TV, D)],
        expected_output_shape=(B, TQ, D),
        expected_scores_shape=(B, TQ, TV),
        mask_input=0,
    )


def test_contract_causal_with_key():
    run_layer_contract(
        Attention,
        {"score_mode": "general"},
        [(B, TQ, 5), (B, TV, 3), (B, TV, 7)],
        call_kwargs={"use_causal_mask": True},
        expected_output_shape=(B, TQ, 3),
        expected_scores_shape=(B, TQ, TV),
        check_mixed_precision=False,
    )


# Float64 reference ----------------------------------------------------------


@pytest.mark.parametrize("score_mode", ["dot", "scaled_dot", "general", "cosine"])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference(score_mode, causal):
    q, v, k = _data()
    query_mask, value_mask = _masks()
    layer = Attention(score_mode=score_mode, use_scale=True)
    layer([q, v, k])
    weights = _random_weights(layer)
    layer.set_weights(weights)
    out, scores = layer(
        [q, v, k],
        mask=[query_mask, value_mask],
        use_causal_mask=causal,
        return_attention_scores=True,
    )
    scale = float(weights[0])
    q64 = q.astype(np.float64)
    if score_mode == "general":
        q64 = q64 @ weights[1].astype(np.float64)
    ref_score = "dot" if score_mode == "general" else score_mode
    default = 1 / np.sqrt(D) if score_mode == "scaled_dot" else 1.0
    mask = query_mask[:, :, None] & value_mask[:, None, :]
    ref_out, ref_w = reference_attention(
        q64,
        k,
        v,
        score=ref_score,
        mask=mask,
        causal="top_left" if causal else False,
        scale=default * scale,
    )
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), ref_w, atol=ATOL)


def test_concat_matches_reference():
    q, v, k = _data()
    _, value_mask = _masks()
    layer = Attention(score_mode="concat", use_scale=True)
    layer([q, v, k])
    scale, weight = _random_weights(layer)
    layer.set_weights([scale, weight])
    out, scores = layer([q, v, k], mask=[None, value_mask], return_attention_scores=True)
    ref_out, ref_w = reference_concat_attention(
        q,
        k,
        v,
        float(scale),
        float(weight),
        np.broadcast_to(value_mask[:, None, :], (B, TQ, TV)),
    )
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), ref_w, atol=ATOL)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tq,tv", [(4, 6), (6, 4), (5, 5)])
def test_sliding_window_is_top_left_aligned(causal, tq, tv):
    q, v, _ = _data(tq=tq, tv=tv)
    layer = Attention(score_mode="scaled_dot", sliding_window=2)
    out, scores = layer([q, v], use_causal_mask=causal, return_attention_scores=True)
    mask = reference_mask(tq, tv, causal=causal, window=2, alignment="top_left")
    ref_out, ref_w = reference_attention(q, v, v, score="scaled_dot", mask=mask)
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), ref_w, atol=ATOL)


# Parity with keras.layers.Attention -----------------------------------------


@pytest.mark.parametrize("score_mode", ["dot", "concat"])
@pytest.mark.parametrize("use_scale", [False, True])
@pytest.mark.parametrize("masking", ["none", "value", "query_value", "causal", "all"])
def test_parity_with_keras(score_mode, use_scale, masking):
    q, v, k = _data()
    query_mask, value_mask = _masks()
    ours = Attention(score_mode=score_mode, use_scale=use_scale)
    theirs = keras.layers.Attention(score_mode=score_mode, use_scale=use_scale)
    ours([q, v, k])
    theirs([q, v, k])
    weights = _random_weights(theirs)
    theirs.set_weights(weights)
    ours.set_weights(theirs.get_weights())
    kwargs = {"return_attention_scores": True}
    if masking in ("value", "query_value", "all"):
        kwargs["mask"] = [query_mask if masking != "value" else None, value_mask]
    if masking in ("causal", "all"):
        kwargs["use_causal_mask"] = True
    out, scores = ours([q, v, k], **kwargs)
    k_out, k_scores = theirs([q, v, k], **kwargs)
    np.testing.assert_allclose(to_numpy(out), to_numpy(k_out), atol=ATOL)
    valid = (
        np.ones((B, TQ), bool) if "mask" not in kwargs or kwargs["mask"][0] is None else query_mask
    )
    # Keras leaves the scores of padded queries as if unmasked; attnkit zeroes them.
    np.testing.assert_allclose(to_numpy(scores)[valid], to_numpy(k_scores)[valid], atol=ATOL)
    np.testing.assert_array_equal(to_numpy(scores)[~valid], 0.0)


def test_parity_with_keras_nd_batch():
    q, v, k = _data(batch=(2, 3))
    ours, theirs = Attention(use_scale=True), keras.layers.Attention(use_scale=True)
    ours([q, v, k])
    theirs([q, v, k])
    theirs.set_weights(_random_weights(theirs))
    ours.set_weights(theirs.get_weights())
    out, scores = ours([q, v, k], use_causal_mask=True, return_attention_scores=True)
    k_out, k_scores = theirs([q, v, k], use_causal_mask=True, return_attention_scores=True)
    assert tuple(out.shape) == (2, 3, TQ, D) and tuple(scores.shape) == (2, 3, TQ, TV)
    np.testing.assert_allclose(to_numpy(out), to_numpy(k_out), atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), to_numpy(k_scores), atol=ATOL)


def test_nd_batch_masks_equal_flattened_call():
    # keras.layers.Attention cannot broadcast an N-D value mask; attnkit folds the
    # batch axes, so the result must equal the call on the flattened batch.
    q, v, k = _data(batch=(2, 3))
    rng = np.random.default_rng(3)
    query_mask, value_mask = rng.random((2, 3, TQ)) > 0.3, rng.random((2, 3, TV)) > 0.3
    layer = Attention(score_mode="general")
    out, scores = layer([q, v, k], mask=[query_mask, value_mask], return_attention_scores=True)
    flat = [x.reshape(6, *x.shape[2:]) for x in (q, v, k)]
    flat_out, flat_scores = layer(
        flat,
        mask=[query_mask.reshape(6, TQ), value_mask.reshape(6, TV)],
        return_attention_scores=True,
    )
    np.testing.assert_allclose(to_numpy(out).reshape(6, TQ, D), to_numpy(flat_out), atol=1e-7)
    np.testing.assert_allclose(
        to_numpy(scores).reshape(6, TQ, TV), to_numpy(flat_scores), atol=1e-7
    )


def test_keras_config_loads():
    theirs = keras.layers.Attention(use_scale=True, score_mode="concat", dropout=0.1, seed=3)
    ours = Attention.from_config(theirs.get_config())
    assert (ours.use_scale, ours.score_mode, ours.dropout, ours.seed) == (
        True,
        "concat",
        0.1,
        3,
    )


# Masks ------------------------------------------------------------------------


def test_implicit_masks_equal_explicit_masks():
    q_ids = np.array([[3, 4, 5, 0], [1, 2, 3, 4]])
    v_ids = np.array([[3, 4, 5, 6, 0, 0], [1, 2, 0, 4, 5, 6]])
    embedding = keras.layers.Embedding(10, D, mask_zero=True)
    layer = Attention(score_mode="scaled_dot")
    q_emb, v_emb = embedding(q_ids), embedding(v_ids)
    implicit, implicit_scores = layer([q_emb, v_emb], return_attention_scores=True)
    plain_q = keras.ops.convert_to_tensor(to_numpy(q_emb))
    plain_v = keras.ops.convert_to_tensor(to_numpy(v_emb))
    explicit, explicit_scores = layer(
        [plain_q, plain_v], mask=[q_ids != 0, v_ids != 0], return_attention_scores=True
    )
    np.testing.assert_allclose(to_numpy(implicit), to_numpy(explicit), atol=1e-7)
    np.testing.assert_allclose(to_numpy(implicit_scores), to_numpy(explicit_scores), atol=1e-7)
    unmasked = layer([plain_q, plain_v])
    assert not np.allclose(to_numpy(unmasked), to_numpy(explicit))  # the masks did act


def test_query_mask_passes_on_to_the_output():
    ids = np.array([[3, 4, 0, 0], [1, 2, 3, 4]])
    inputs = keras.Input((TQ,), dtype="int32")
    x = keras.layers.Embedding(10, D, mask_zero=True)(inputs)
    out = Attention()([x, x])
    assert out._keras_mask is not None
    model = keras.Model(inputs, out)
    y = model(ids)
    np.testing.assert_array_equal(to_numpy(y)[0, 2:], 0.0)


def test_fully_masked_rows_are_zero_not_nan():
    q, v, _ = _data()
    value_mask = np.zeros((B, TV), bool)
    value_mask[1, :2] = True
    out, scores = Attention(score_mode="cosine")(
        [q, v], mask=[None, value_mask], return_attention_scores=True
    )
    out, scores = to_numpy(out), to_numpy(scores)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(scores[0], 0.0)
    np.testing.assert_allclose(scores[1].sum(-1), 1.0, atol=1e-6)


def test_symbolic_and_eager_scores_shapes():
    q_in, v_in = keras.Input((3, 5)), keras.Input((7, 5))
    out, scores = Attention()([q_in, v_in], return_attention_scores=True)
    assert tuple(out.shape) == (None, 3, 5) and tuple(scores.shape) == (None, 3, 7)
    q, v, _ = _data(tq=3, tv=7, d=5)
    _, eager = Attention()([q, v], return_attention_scores=True)
    assert tuple(eager.shape) == (B, 3, 7)
    np.testing.assert_allclose(to_numpy(eager).sum(-1), 1.0, atol=1e-6)


def test_legacy_causal_keyword_warns_and_acts():
    q, v, _ = _data(tq=5, tv=5)
    with pytest.warns(DeprecationWarning, match="use_causal_mask"):
        legacy = Attention(causal=True)
    assert legacy.get_config()["causal"] is True
    modern = Attention()
    np.testing.assert_allclose(
        to_numpy(legacy([q, v])),
        to_numpy(modern([q, v], use_causal_mask=True)),
        atol=1e-7,
    )


# Dropout ------------------------------------------------------------------------


def test_dropout_only_in_training():
    q, v, _ = _data()
    layer = Attention(dropout=0.5, seed=7)
    plain = Attention()
    inference = to_numpy(layer([q, v], training=False))
    np.testing.assert_allclose(inference, to_numpy(plain([q, v])), atol=1e-7)
    _, dropped = layer([q, v], training=True, return_attention_scores=True)
    _, kept = layer([q, v], training=False, return_attention_scores=True)
    # The returned scores are the weights before dropout; the output differs.
    np.testing.assert_allclose(to_numpy(dropped), to_numpy(kept), atol=1e-7)
    assert not np.allclose(to_numpy(layer([q, v], training=True)), inference)


# Errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"score_mode": "bilinear"}, "Received: score_mode='bilinear'"),
        ({"dropout": 1.0}, "Received: dropout=1.0"),
        ({"dropout": -0.1}, r"Received: dropout=-0.1"),
        ({"use_scale": "yes"}, "Received: use_scale='yes'"),
        ({"sliding_window": 0}, "Received: sliding_window=0"),
        ({"seed": 1.5}, "Received: seed=1.5"),
        ({"causal": "yes"}, "Received: causal='yes'"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Attention(**kwargs)


def test_call_errors():
    q, v, _ = _data()
    layer = Attention()
    with pytest.raises(ValueError, match="Received: inputs="):
        layer(q)
    with pytest.raises(ValueError, match="Received: mask="):
        layer([q, v], mask=np.ones((B, TQ), bool))
    with pytest.raises(ValueError, match=r"Received: query.shape\[-1\]=8, key.shape\[-1\]=3"):
        Attention(score_mode="dot")([q, v[..., :3]])
    with pytest.raises(ValueError, match="Received: value.shape="):
        Attention()([q, v, v[:, :3]])


def test_window_with_unknown_lengths_in_a_compiled_model():
    q, v, _ = _data()
    inputs = [keras.Input((None, D)), keras.Input((None, D))]
    layer = Attention(score_mode="scaled_dot", sliding_window=2)
    model = keras.Model(inputs, layer(inputs))
    eager = to_numpy(layer([q, v]))
    np.testing.assert_allclose(model.predict([q, v], verbose=0), eager, atol=1e-6)
    mask = reference_mask(TQ, TV, window=2, alignment="top_left")
    ref_out, _ = reference_attention(q, v, v, score="scaled_dot", mask=mask)
    np.testing.assert_allclose(eager, ref_out, atol=ATOL)
