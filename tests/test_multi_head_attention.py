"""attnkit.layers.MultiHeadAttention: Keras parity, GQA, cache, Keras bug fixes."""

import os

import keras
import numpy as np
import pytest

import attnkit
from attnkit.layers import MultiHeadAttention
from attnkit.testing.contract import run_layer_contract
from attnkit.testing.reference import reference_multi_head_attention
from attnkit.testing.registry import EXAMPLES

ATOL = 1e-5
B, TQ, TV, D = 2, 4, 6, 8


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def _data(tq=TQ, tv=TV, d=D, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, tq, d)).astype("float32"),
        rng.normal(size=(B, tv, d)).astype("float32"),
    )


def _masks():
    query_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    value_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 1]], bool)
    return query_mask, value_mask


def _paired(q, v, **kwargs):
    """attnkit and Keras layers with the same (random, non-zero bias) weights."""
    theirs = keras.layers.MultiHeadAttention(**kwargs)
    theirs(q, v, return_attention_scores=True)  # the scores path works for every value_dim
    rng = np.random.default_rng(5)
    theirs.set_weights(
        [rng.normal(size=w.shape).astype("float32") * 0.5 for w in theirs.get_weights()]
    )
    ours = MultiHeadAttention(**kwargs)
    ours(q, v)
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def _reference_mha(layer, q, v, **kwargs):
    weights = {x.path.split("/", 1)[1]: to_numpy(x) for x in layer.weights}
    return reference_multi_head_attention(weights, q, v, **kwargs)


# Contract -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,shapes,scores_shape",
    [
        ({"num_heads": 2, "key_dim": 4}, [(B, TQ, D), (B, TV, D)], (B, 2, TQ, TV)),
        (
            {
                "num_heads": 4,
                "key_dim": 4,
                "num_key_value_heads": 2,
                "value_dim": 3,
                "use_gate": True,
                "output_shape": 5,
                "sliding_window": 2,
            },
            [(B, TQ, D), (B, TV, 6), (B, TV, 7)],
            (B, 4, TQ, TV),
        ),
        (
            {"num_heads": 2, "key_dim": 4, "attention_axes": (1, 2)},
            [(B, 3, 2, D), (B, 4, 2, D)],
            (B, 2, 3, 2, 4, 2),
        ),
    ],
    ids=["mha", "gqa_gate_window", "attention_axes"],
)
def test_contract(kwargs, shapes, scores_shape):
    run_layer_contract(
        MultiHeadAttention,
        kwargs,
        shapes,
        call_style=EXAMPLES["MultiHeadAttention"].call_style,
        expected_output_shape=shapes[0][:-1] + (kwargs.get("output_shape") or shapes[0][-1],),
        expected_scores_shape=scores_shape,
        mask_input=0,
        # fit and mixed precision do not depend on the axes; the other cases run them.
        check_fit="attention_axes" not in kwargs,
        check_mixed_precision="attention_axes" not in kwargs,
    )


# Parity with keras.layers.MultiHeadAttention -------------------------------------


_PARITY_LAYERS = {
    "plain": {"num_heads": 2, "key_dim": 4},
    "value_dim_gate": {
        "num_heads": 2,
        "key_dim": 4,
        "value_dim": 3,
        "use_gate": True,
        "output_shape": (5,),
    },
    "window": {"num_heads": 3, "key_dim": 2, "sliding_window": 2},
}
_MASKINGS = ["none", "causal", "value", "attention_causal", "query"]


@pytest.mark.parametrize(
    "layer_id,masking",
    [("plain", m) for m in _MASKINGS]
    + [("value_dim_gate", m) for m in ("none", "attention_causal", "query")]
    + [("window", m) for m in ("causal", "value", "query")],
)
def test_parity_with_keras(layer_id, masking):
    kwargs = _PARITY_LAYERS[layer_id]
    q, v = _data()
    ours, theirs = _paired(q, v, **kwargs)
    query_mask, value_mask = _masks()
    call = {}
    valid = np.ones((B, TQ), bool)
    if masking in ("causal", "attention_causal"):
        call["use_causal_mask"] = True
    if masking == "value":
        call["value_mask"] = value_mask
    if masking == "attention_causal":
        call["attention_mask"] = np.random.default_rng(2).random((B, TQ, TV)) > 0.3
        call["attention_mask"][:, :, 0] = True
    ours_call = dict(call)
    if masking == "query":
        # Keras drops an explicit query_mask (a bug tested below); give it the
        # same information as an attention mask.
        ours_call["query_mask"] = query_mask
        call["attention_mask"] = np.broadcast_to(query_mask[:, :, None], (B, TQ, TV))
        valid = query_mask
    out, scores = ours(q, v, return_attention_scores=True, **ours_call)
    k_out, k_scores = theirs(q, v, return_attention_scores=True, **call)
    np.testing.assert_allclose(to_numpy(out)[valid], to_numpy(k_out)[valid], atol=ATOL)
    np.testing.assert_allclose(
        to_numpy(scores).transpose(0, 2, 1, 3)[valid],
        to_numpy(k_scores).transpose(0, 2, 1, 3)[valid],
        atol=ATOL,
    )
    # Without scores both take their fast paths.
    fast = to_numpy(ours(q, v, **ours_call))
    np.testing.assert_allclose(fast, to_numpy(out), atol=ATOL)
    if kwargs.get("value_dim") is None or keras.backend.backend() != "jax":
        np.testing.assert_allclose(fast[valid], to_numpy(theirs(q, v, **call))[valid], atol=ATOL)


@pytest.mark.parametrize(
    "axes,shapes",
    [((1,), [(B, 3, 5, D), (B, 4, 5, D)]), ((1, 2), [(B, 3, 2, D), (B, 4, 3, D)])],
)
def test_parity_with_keras_attention_axes(axes, shapes):
    rng = np.random.default_rng(0)
    q, v = (rng.normal(size=s).astype("float32") for s in shapes)
    ours, theirs = _paired(q, v, num_heads=2, key_dim=4, attention_axes=axes)
    out, scores = ours(q, v, return_attention_scores=True)
    k_out, k_scores = theirs(q, v, return_attention_scores=True)
    assert tuple(scores.shape) == tuple(k_scores.shape)
    np.testing.assert_allclose(to_numpy(out), to_numpy(k_out), atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), to_numpy(k_scores), atol=ATOL)
    np.testing.assert_allclose(to_numpy(ours(q, v)), to_numpy(out), atol=ATOL)


def test_weights_match_keras_names_and_shapes():
    q, v = _data()
    kwargs = {
        "num_heads": 2,
        "key_dim": 4,
        "value_dim": 3,
        "use_gate": True,
        "output_shape": 5,
    }
    ours, theirs = _paired(q, v, **kwargs)

    def strip(layer):
        return [(w.path.split("/", 1)[1], tuple(w.shape)) for w in layer.weights]

    assert strip(ours) == strip(theirs)


def test_matches_float64_reference():
    q, v = _data()
    layer = MultiHeadAttention(num_heads=2, key_dim=4, bias_initializer="random_normal")
    query_mask, value_mask = _masks()
    out, scores = layer(
        q,
        v,
        query_mask=query_mask,
        value_mask=value_mask,
        use_causal_mask=True,
        return_attention_scores=True,
    )
    mask = query_mask[:, :, None] & value_mask[:, None, :]
    ref_out, ref_w = _reference_mha(layer, q, v, mask=mask, causal="top_left")
    valid = query_mask
    np.testing.assert_allclose(to_numpy(out)[valid], ref_out[valid], atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), ref_w, atol=ATOL)


def test_keras_config_loads():
    theirs = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=4, dropout=0.1, use_gate=True, seed=3
    )
    ours = MultiHeadAttention.from_config(theirs.get_config())
    config = ours.get_config()
    for name, value in theirs.get_config().items():
        if name not in ("name",):
            assert config[name] == value, name


# Grouped-query attention ----------------------------------------------------------


def test_gqa_with_all_heads_equals_mha():
    q, v = _data()
    mha = MultiHeadAttention(num_heads=4, key_dim=2)
    gqa = MultiHeadAttention(num_heads=4, key_dim=2, num_key_value_heads=4)
    mha(q, v)
    gqa(q, v)
    gqa.set_weights(mha.get_weights())
    _, value_mask = _masks()
    for kwargs in ({}, {"use_causal_mask": True, "value_mask": value_mask}):
        a, sa = mha(q, v, return_attention_scores=True, **kwargs)
        b, sb = gqa(q, v, return_attention_scores=True, **kwargs)
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-7)
        np.testing.assert_allclose(to_numpy(sa), to_numpy(sb), atol=1e-7)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_matches_reference(kv_heads):
    q, v = _data()
    layer = MultiHeadAttention(num_heads=4, key_dim=3, num_key_value_heads=kv_heads)
    out, scores = layer(q, v, use_causal_mask=True, return_attention_scores=True)
    shapes = {w.path.split("/", 1)[1]: tuple(w.shape) for w in layer.weights}
    assert shapes["key/kernel"] == shapes["value/kernel"] == (D, kv_heads, 3)
    assert shapes["query/kernel"] == (D, 4, 3)
    # Query head h uses key/value head h // (H / Hkv).
    ref_out, ref_w = _reference_mha(layer, q, v, causal="top_left")
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), ref_w, atol=ATOL)


@pytest.mark.parametrize("implementation", ["naive", "chunked", "fused"])
def test_implementations_agree(implementation):
    q, v = _data()
    _, value_mask = _masks()
    base = MultiHeadAttention(num_heads=4, key_dim=2, value_dim=3, num_key_value_heads=2)
    other = MultiHeadAttention(
        num_heads=4,
        key_dim=2,
        value_dim=3,
        num_key_value_heads=2,
        implementation=implementation,
    )
    base(q, v)
    other(q, v)
    other.set_weights(base.get_weights())
    for kwargs in ({}, {"use_causal_mask": True, "value_mask": value_mask}):
        expected = to_numpy(base(q, v, **kwargs))
        np.testing.assert_allclose(to_numpy(other(q, v, **kwargs)), expected, atol=ATOL)


# Key/value cache ----------------------------------------------------------------


@pytest.mark.parametrize("kv_heads,window", [(4, None), (2, None), (1, 3)])
def test_cached_decoding_equals_causal_call(kv_heads, window):
    x, _ = _data(tq=6)
    layer = MultiHeadAttention(
        num_heads=4, key_dim=2, num_key_value_heads=kv_heads, sliding_window=window
    )
    full, full_scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    cache = np.zeros((B, 2, 6, kv_heads, 2), "float32")
    steps = []
    for t in range(6):
        out, scores, cache = layer(
            x[:, t : t + 1],
            x[:, t : t + 1],
            cache=cache,
            # A tensor index, as in a compiled generate loop (and one JAX trace).
            cache_update_index=keras.ops.convert_to_tensor(t, dtype="int32"),
            return_attention_scores=True,
        )
        assert tuple(scores.shape) == (B, 4, 1, 6)
        np.testing.assert_allclose(
            to_numpy(scores)[:, :, 0], to_numpy(full_scores)[:, :, t], atol=ATOL
        )
        steps.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), to_numpy(full), atol=ATOL)
    # The cache now holds the projected keys and values of the whole sequence.
    np.testing.assert_allclose(to_numpy(cache)[:, 0], to_numpy(layer.key_dense(x)), atol=1e-6)


def test_prefill_then_decode():
    x, _ = _data(tq=6)
    layer = MultiHeadAttention(num_heads=2, key_dim=4, num_key_value_heads=1)
    full = to_numpy(layer(x, x, use_causal_mask=True))
    cache = keras.ops.zeros((B, 2, 6, 1, 4))
    prefix, cache = layer(
        x[:, :4], x[:, :4], cache=cache, cache_update_index=0, use_causal_mask=True
    )
    np.testing.assert_allclose(to_numpy(prefix), full[:, :4], atol=ATOL)
    for t in (4, 5):
        index = keras.ops.convert_to_tensor(t, dtype="int32")  # a traced index in a generate loop
        step, cache = layer(x[:, t : t + 1], x[:, t : t + 1], cache=cache, cache_update_index=index)
        np.testing.assert_allclose(to_numpy(step), full[:, t : t + 1], atol=ATOL)
    # Without an index the cache is used as it is: the last query sees every position.
    whole, same_cache = layer(x[:, 5:], x[:, 5:], cache=cache)
    np.testing.assert_allclose(to_numpy(whole), full[:, 5:], atol=ATOL)
    np.testing.assert_array_equal(to_numpy(same_cache), to_numpy(cache))


def test_cache_symbolic_shapes():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = keras.Input((1, D))
    cache = keras.Input((2, 10, 2, 4))
    out, scores, new_cache = layer(
        x, x, cache=cache, cache_update_index=3, return_attention_scores=True
    )
    assert tuple(out.shape) == (None, 1, D)
    assert tuple(scores.shape) == (None, 2, 1, 10)
    assert tuple(new_cache.shape) == (None, 2, 10, 2, 4)


def test_cache_errors():
    x, _ = _data(tq=1)
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="Received: cache=None, cache_update_index=0"):
        layer(x, x, cache_update_index=0)
    with pytest.raises(ValueError, match=r"Received: cache.shape=\(2, 2, 5, 3, 4\)"):
        layer(x, x, cache=np.zeros((B, 2, 5, 3, 4), "float32"), cache_update_index=0)
    with pytest.raises(ValueError, match="Received: cache_update_index=-1"):
        layer(x, x, cache=np.zeros((B, 2, 5, 2, 4), "float32"), cache_update_index=-1)
    uneven = MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3)
    with pytest.raises(ValueError, match="Received: key_dim=4, value_dim=3"):
        uneven(x, x, cache=np.zeros((B, 2, 5, 2, 4), "float32"), cache_update_index=0)


# Masks --------------------------------------------------------------------------


def test_implicit_masks_equal_explicit_masks():
    q_ids = np.array([[3, 4, 5, 0], [1, 2, 3, 4]])
    v_ids = np.array([[3, 4, 5, 6, 0, 0], [1, 2, 0, 4, 5, 6]])
    embedding = keras.layers.Embedding(10, D, mask_zero=True)
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    q_emb, v_emb = embedding(q_ids), embedding(v_ids)
    implicit, implicit_scores = layer(q_emb, v_emb, return_attention_scores=True)
    plain_q, plain_v = (keras.ops.convert_to_tensor(to_numpy(x)) for x in (q_emb, v_emb))
    explicit, explicit_scores = layer(
        plain_q,
        plain_v,
        query_mask=q_ids != 0,
        value_mask=v_ids != 0,
        return_attention_scores=True,
    )
    np.testing.assert_allclose(to_numpy(implicit), to_numpy(explicit), atol=1e-7)
    np.testing.assert_allclose(to_numpy(implicit_scores), to_numpy(explicit_scores), atol=1e-7)
    assert not np.allclose(to_numpy(layer(plain_q, plain_v)), to_numpy(explicit))
    # Rows sum to 1, padded query rows to 0.
    rows = to_numpy(explicit_scores).sum(-1)
    np.testing.assert_allclose(
        rows, np.broadcast_to((q_ids != 0)[:, None, :], rows.shape), atol=1e-6
    )


def test_fully_masked_rows_are_zero_not_nan():
    q, v = _data()
    attention_mask = np.ones((B, TQ, TV), bool)
    attention_mask[0, 1] = False
    layer = MultiHeadAttention(num_heads=2, key_dim=4, use_bias=False)
    out, scores = layer(q, v, attention_mask=attention_mask, return_attention_scores=True)
    out, scores = to_numpy(out), to_numpy(scores)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(scores[0, :, 1], 0.0)
    np.testing.assert_array_equal(out[0, 1], 0.0)  # no bias: zero attention output stays 0


def test_query_mask_passes_on_to_the_output():
    inputs = keras.Input((TQ,), dtype="int32")
    x = keras.layers.Embedding(10, D, mask_zero=True)(inputs)
    out = MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
    assert out._keras_mask is not None
    eager = MultiHeadAttention(num_heads=2, key_dim=4)
    q, v = _data()
    query_mask, _ = _masks()
    y = eager(q, v, query_mask=query_mask)
    np.testing.assert_array_equal(to_numpy(y._keras_mask), query_mask)


# Regressions: bugs of keras.layers.MultiHeadAttention 3.15.1 -----------------------


def test_regression_symbolic_scores_use_key_length():
    # Keras gives (None, 2, 3, 3): Tq where Tv belongs.
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    _, scores = layer(keras.Input((3, D)), keras.Input((7, D)), return_attention_scores=True)
    assert tuple(scores.shape) == (None, 2, 3, 7)
    q, v = _data(tq=3, tv=7)
    _, eager = layer(q, v, return_attention_scores=True)
    assert tuple(eager.shape) == (B, 2, 3, 7)


def test_regression_symbolic_scores_with_attention_axes():
    # Keras gives (None, 2, 3, 3); the eager scores are (B, 5, 2, 3, 7).
    layer = MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=(1,))
    _, scores = layer(keras.Input((3, 5, D)), keras.Input((7, 5, D)), return_attention_scores=True)
    assert tuple(scores.shape) == (None, 5, 2, 3, 7)
    rng = np.random.default_rng(0)
    q, v = (
        rng.normal(size=(B, 3, 5, D)).astype("float32"),
        rng.normal(size=(B, 7, 5, D)).astype("float32"),
    )
    _, eager = layer(q, v, return_attention_scores=True)
    assert tuple(eager.shape) == (B, 5, 2, 3, 7)
    np.testing.assert_allclose(to_numpy(eager).sum(-1), 1.0, atol=1e-6)


def test_regression_explicit_query_mask_is_used():
    # Keras replaces an explicit query_mask with the tensor's (absent) Keras mask.
    q, v = _data()
    query_mask, _ = _masks()
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    _, masked = layer(q, v, query_mask=query_mask, return_attention_scores=True)
    _, unmasked = layer(q, v, return_attention_scores=True)
    masked, unmasked = to_numpy(masked), to_numpy(unmasked)
    np.testing.assert_array_equal(masked[0, :, 3], 0.0)
    assert not np.allclose(unmasked[0, :, 3], 0.0)
    np.testing.assert_allclose(masked[1], unmasked[1], atol=1e-7)
    # An explicit mask wins over the tensor's Keras mask.
    embedded = keras.layers.Embedding(10, D, mask_zero=True)(np.array([[1, 2, 3, 4], [1, 2, 3, 4]]))
    _, overridden = layer(embedded, embedded, query_mask=query_mask, return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(overridden)[0, :, 3], 0.0)


def test_regression_value_dim_on_the_fused_path():
    # Keras crashes on JAX: "cannot reshape array of shape (2, 4, 2, 1, 6)".
    q, v = _data()
    kwargs = {"num_heads": 2, "key_dim": 4, "num_key_value_heads": 1}
    fused = MultiHeadAttention(value_dim=6, flash_attention=True, **kwargs)
    naive = MultiHeadAttention(value_dim=6, implementation="naive", **kwargs)
    short = MultiHeadAttention(value_dim=2, implementation="fused", **kwargs)
    short_naive = MultiHeadAttention(value_dim=2, implementation="naive", **kwargs)
    for a, b in ((fused, naive), (short, short_naive)):
        b(q, v)
        a(q, v)
        a.set_weights(b.get_weights())
        for kwargs_call in ({}, {"use_causal_mask": True}):
            np.testing.assert_allclose(
                to_numpy(a(q, v, **kwargs_call)),
                to_numpy(b(q, v, **kwargs_call)),
                atol=ATOL,
            )


@pytest.mark.parametrize("flash", [None, False, True])
def test_regression_flash_attention_is_saved(flash, tmp_path):
    layer = MultiHeadAttention(num_heads=2, key_dim=4, flash_attention=flash)
    config = layer.get_config()
    assert config["flash_attention"] is flash
    assert MultiHeadAttention.from_config(config).flash_attention is flash
    inputs = keras.Input((TQ, D))
    model = keras.Model(inputs, layer(inputs, inputs))
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert reloaded.layers[-1].flash_attention is flash


# Saving a model of all three layers -------------------------------------------------


def test_model_of_attnkit_layers_saves_and_reloads(tmp_path):
    ids = keras.Input((TQ,), dtype="int32")
    x = keras.layers.Embedding(12, D, mask_zero=True)(ids)
    x = MultiHeadAttention(num_heads=4, key_dim=2, num_key_value_heads=2)(
        x, x, use_causal_mask=True
    )
    x = attnkit.layers.Attention(score_mode="general")([x, x])
    x = attnkit.layers.AdditiveAttention(units=5, paper_init=True)([x, x])
    model = keras.Model(ids, keras.layers.GlobalAveragePooling1D()(x))
    data = np.array([[1, 2, 3, 0], [4, 5, 6, 7]])
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(reloaded(data)), to_numpy(model(data)))


# Errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_heads": 0}, "Received: num_heads=0"),
        ({"key_dim": "4"}, "Received: key_dim='4'"),
        ({"value_dim": -1}, "Received: value_dim=-1"),
        ({"dropout": 1.5}, "Received: dropout=1.5"),
        ({"output_shape": (3, 0)}, r"Received: output_shape=\(3, 0\)"),
        ({"attention_axes": "1"}, "Received: attention_axes='1'"),
        ({"sliding_window": 0}, "Received: sliding_window=0"),
        ({"flash_attention": "yes"}, "Received: flash_attention='yes'"),
        ({"num_key_value_heads": 3}, "Received: num_heads=4, num_key_value_heads=3"),
        ({"implementation": "flash"}, "Received: implementation='flash'"),
        (
            {"flash_attention": True, "implementation": "naive"},
            "Received: implementation='naive'",
        ),
        (
            {"flash_attention": False, "implementation": "fused"},
            "Received: implementation='fused'",
        ),
        ({"dropout": 0.1, "flash_attention": True}, "Received: dropout=0.1"),
        ({"seed": "1"}, "Received: seed='1'"),
    ],
)
def test_constructor_errors(kwargs, match):
    kwargs = {"num_heads": 4, "key_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**kwargs)


def test_call_errors():
    q, v = _data()
    with pytest.raises(ValueError, match="Received: return_attention_scores=True"):
        MultiHeadAttention(num_heads=2, key_dim=4, flash_attention=True)(
            q, v, return_attention_scores=True
        )
    with pytest.raises(ValueError, match=r"Received: attention_axes=\(3,\)"):
        MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=3)(q, v)
    with pytest.raises(ValueError, match="Received: value_shape="):
        MultiHeadAttention(num_heads=2, key_dim=4)(q, v, v[:, :3])
    with pytest.raises(ValueError, match=r"Received: attention_mask.shape=\(6,\)"):
        MultiHeadAttention(num_heads=2, key_dim=4)(q, v, attention_mask=np.ones((TV,), bool))


def test_dropout_only_in_training():
    q, v = _data()
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5, seed=3)
    inference = to_numpy(layer(q, v, training=False))
    np.testing.assert_allclose(to_numpy(layer(q, v)), inference, atol=1e-7)
    assert not np.allclose(to_numpy(layer(q, v, training=True)), inference)


def test_flash_attention_false_avoids_the_fused_kernel():
    q, v = _data()
    base = MultiHeadAttention(num_heads=4, key_dim=2, num_key_value_heads=2)
    plain = MultiHeadAttention(num_heads=4, key_dim=2, num_key_value_heads=2, flash_attention=False)
    base(q, v)
    plain(q, v)
    plain.set_weights(base.get_weights())
    from attnkit.ops import dispatch

    for tq, tv in ((TQ, TV), (4096, 4096), (None, None)):
        chosen = dispatch.layer_implementation("auto", False, tq, tv, False, 0.0)
        assert chosen in ("naive", "chunked"), (tq, tv, chosen)
    expected = to_numpy(base(q, v, use_causal_mask=True))
    out, scores = plain(q, v, use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL)
    assert tuple(scores.shape) == (B, 4, TQ, TV)
