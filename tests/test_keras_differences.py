"""One test per row of docs/KERAS_DIFFERENCES.md: attnkit's behaviour pinned,
side by side with keras.layers (3.15) where both run."""

import warnings

import keras
import numpy as np
import pytest
from conftest import to_numpy

from attnkit import layers

B, TQ, TV, D = 2, 4, 6, 8
ATOL = 1e-5


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, TQ, D)).astype("float32"),
        rng.normal(size=(B, TV, D)).astype("float32"),
    )


QUERY_MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
VALUE_MASK = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 1]], bool)


def _heads(name):
    """(attnkit layer, Keras layer) of a heads layer, with the same weights."""
    q, v = _data()
    if name == "MultiHeadAttention":
        ours, theirs = layers.MultiHeadAttention(2, 4), keras.layers.MultiHeadAttention(2, 4)
    else:
        ours = layers.GroupedQueryAttention(4, 2, 1)
        theirs = keras.layers.GroupQueryAttention(4, 2, 1)
    theirs(q, v)
    ours(q, v)
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def _pair(name):
    """(attnkit layer, Keras layer) of a list-input layer, with the same weights."""
    q, v = _data()
    ours, theirs = getattr(layers, name)(), getattr(keras.layers, name)()
    theirs([q, v])
    ours([q, v])
    ours.set_weights(theirs.get_weights())
    return ours, theirs


# Row 1: a padded query --------------------------------------------------------


@pytest.mark.parametrize("name", ["Attention", "AdditiveAttention"])
def test_row1_padded_query_gets_zero_weights_list_layers(name):
    q, v = _data()
    ours, theirs = _pair(name)
    mask = [QUERY_MASK, VALUE_MASK]
    out, w = ours([q, v], mask=mask, return_attention_scores=True)
    k_out, k_w = theirs([q, v], mask=mask, return_attention_scores=True)
    w, k_w = to_numpy(w), to_numpy(k_w)
    np.testing.assert_array_equal(w[0, 3], 0.0)
    np.testing.assert_allclose(k_w[0, 3].sum(), 1.0, atol=ATOL)  # Keras: a softmax row
    np.testing.assert_allclose(w[QUERY_MASK], k_w[QUERY_MASK], atol=ATOL)
    np.testing.assert_allclose(to_numpy(out), to_numpy(k_out), atol=ATOL)  # both zero it


@pytest.mark.parametrize("name", ["MultiHeadAttention", "GroupedQueryAttention"])
def test_row1_padded_query_is_zero_on_every_path_heads_layers(name):
    ours, theirs = _heads(name)
    q, v = _data()
    mask = np.broadcast_to(QUERY_MASK[:, :, None], (B, TQ, TV))  # Keras' way to pad a query
    bias = to_numpy(ours.output_dense.bias)
    for call in ({"query_mask": QUERY_MASK}, {"attention_mask": mask}):
        out, w = ours(q, v, return_attention_scores=True, **call)
        np.testing.assert_array_equal(to_numpy(w)[0, :, 3], 0.0)
        np.testing.assert_allclose(to_numpy(out)[0, 3], bias, atol=ATOL)
        np.testing.assert_allclose(to_numpy(ours(q, v, **call))[0, 3], bias, atol=ATOL)
    # Keras: zero weights on its scores path, an average of the values on its fused path.
    _, k_w = theirs(q, v, attention_mask=mask, return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(k_w)[0, :, 3], 0.0)
    fast = to_numpy(theirs(q, v, attention_mask=mask))[0, 3]
    assert np.max(np.abs(fast - bias)) > 1e-2


# Row 2: a query with no visible key ---------------------------------------------


@pytest.mark.parametrize("name", ["Attention", "AdditiveAttention"])
def test_row2_no_visible_key_gives_zero_weights(name):
    q, v = _data()
    nothing = np.zeros((B, TV), bool)
    nothing[1] = True
    ours, theirs = _pair(name)
    _, w = ours([q, v], mask=[None, nothing], return_attention_scores=True)
    _, k_w = theirs([q, v], mask=[None, nothing], return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(w)[0], 0.0)
    np.testing.assert_allclose(to_numpy(k_w)[0], 1.0 / TV, atol=ATOL)  # Keras: uniform
    np.testing.assert_allclose(to_numpy(w)[1], to_numpy(k_w)[1], atol=ATOL)


# Row 3: weights before dropout ---------------------------------------------------


def test_row3_attention_returns_the_weights_before_dropout():
    q, v = _data()
    ours = layers.Attention(dropout=0.5, seed=1)
    _, w = ours([q, v], return_attention_scores=True, training=True)
    _, plain = layers.Attention()([q, v], return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(w), to_numpy(plain), atol=ATOL)  # a distribution
    _, k_w = keras.layers.Attention(dropout=0.5, seed=1)(
        [q, v], return_attention_scores=True, training=True
    )
    assert np.any(to_numpy(k_w) == 0.0)  # Keras: dropped weights


# Row 4: error wording -------------------------------------------------------------


@pytest.mark.parametrize(
    "make,ours_match,keras_match",
    [
        (
            lambda m: m.Attention(score_mode="invalid_mode"),
            r"`score_mode` must be one of .*Received: score_mode='invalid_mode'",
            r"Invalid value for argument score_mode",
        ),
        (
            lambda m: m.MultiHeadAttention(num_heads=0, key_dim=2),
            r"`num_heads` must be a positive integer. Received: num_heads=0",
            r"argument `num_heads`",
        ),
        (
            lambda m: m.MultiHeadAttention(num_heads=2, key_dim=2, output_shape=8.0),
            r"`output_shape` must be .*Received: output_shape=8.0",
            r"Invalid `output_shape`",
        ),
        (
            lambda m: m.MultiHeadAttention(2, 2, flash_attention=True, dropout=0.1),
            r"Received: dropout=0.1",
            r"Dropout is not supported when flash attention is enabled",
        ),
        (
            lambda m: m.GroupQueryAttention(2, 4, 3),
            r"`num_query_heads` must be divisible by `num_key_value_heads`. Received:",
            r"`num_query_heads` must be divisible by `num_key_value_heads`.$",
        ),
    ],
)
def test_row4_same_value_errors_in_house_wording(make, ours_match, keras_match):
    with pytest.raises(ValueError, match=ours_match):
        make(layers)
    with pytest.raises(ValueError, match=keras_match):
        make(keras.layers)


def test_row4_wrong_input_list_wording():
    x = np.zeros((1, 2, 2), "float32")
    with pytest.raises(ValueError, match=r"must be called on a list .*Received: inputs="):
        layers.Attention()([x, x, x, x])
    with pytest.raises(ValueError, match=r"length 2 or 3"):
        keras.layers.Attention()([x, x, x, x])


# Row 5: wrongly shaped masks (every layer and argument: test_call_argument_errors.py)


@pytest.mark.parametrize("name", ["MultiHeadAttention", "GroupedQueryAttention"])
def test_row5_a_broadcastable_but_wrong_mask_is_refused(name):
    ours, theirs = _heads(name)
    q, v = _data()
    bad = np.ones((B, 1, TV), bool)  # (B, 1, Tv): Keras broadcasts it silently
    theirs(q, v, value_mask=bad)
    with pytest.raises(ValueError, match=r"`value_mask` must have shape \(B, Tv\)"):
        ours(q, v, value_mask=bad)


# Row 6: the explicit query_mask of MultiHeadAttention -----------------------------


def test_row6_explicit_query_mask_is_used():
    ours, theirs = _heads("MultiHeadAttention")
    q, v = _data()
    _, w = ours(q, v, query_mask=QUERY_MASK, return_attention_scores=True)
    _, k_w = theirs(q, v, query_mask=QUERY_MASK, return_attention_scores=True)
    _, k_plain = theirs(q, v, return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(w)[0, :, 3], 0.0)
    np.testing.assert_allclose(to_numpy(k_w), to_numpy(k_plain), atol=ATOL)  # Keras ignores it


# Row 7: symbolic scores' key axis ----------------------------------------------------


def test_row7_symbolic_scores_have_the_key_length():
    q, v = keras.Input((TQ, D)), keras.Input((TV, D))
    _, w = layers.MultiHeadAttention(2, 4)(q, v, return_attention_scores=True)
    _, k_w = keras.layers.MultiHeadAttention(2, 4)(q, v, return_attention_scores=True)
    assert tuple(w.shape) == (None, 2, TQ, TV)
    assert tuple(k_w.shape) == (None, 2, TQ, TQ)


# Row 8: flash_attention saved, and False wins over the global switch --------------


@pytest.mark.parametrize("name", ["MultiHeadAttention", "GroupQueryAttention"])
def test_row8_flash_attention_is_saved(name):
    args = (2, 4) if name == "MultiHeadAttention" else (4, 2, 1)
    ours = getattr(layers, name)(*args, flash_attention=False)
    assert ours.get_config()["flash_attention"] is False
    assert "flash_attention" not in getattr(keras.layers, name)(*args).get_config()
    reloaded = getattr(layers, name).from_config(ours.get_config())
    assert reloaded.flash_attention is False


# Row 9: GroupQueryAttention with query and value of different feature sizes -------


def test_row9_different_feature_sizes_are_accepted_symbolically():
    q, v = keras.Input((TQ, D)), keras.Input((TV, 5))
    out = layers.GroupQueryAttention(4, 2, 1)(q, v)
    assert tuple(out.shape) == (None, TQ, D)
    with pytest.raises(ValueError, match="must be equal"):
        keras.layers.GroupQueryAttention(4, 2, 1)(q, v)
    eager = layers.GroupQueryAttention(4, 2, 1)(*_data()[:1], np.zeros((B, TV, 5), "float32"))
    assert tuple(eager.shape) == (B, TQ, D)


# Row 10: no weightless Softmax/Dropout sublayers; _masked_softmax is the hook -----


def test_row10_masked_softmax_is_the_hook():
    class Sharp(layers.MultiHeadAttention):
        def _masked_softmax(self, scores, attention_mask=None):
            return super()._masked_softmax(scores * 2.0, attention_mask)

    class KerasSharp(keras.layers.MultiHeadAttention):
        def _masked_softmax(self, scores, attention_mask=None):
            return super()._masked_softmax(scores * 2.0, attention_mask)

    q, v = _data()
    ours, theirs = Sharp(2, 4), KerasSharp(2, 4)
    theirs(q, v)
    ours(q, v)
    ours.set_weights(theirs.get_weights())
    # Keras calls the hook on its scores path only; attnkit on every path.
    explicit, _ = theirs(q, v, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(ours(q, v)), to_numpy(explicit), atol=ATOL)
    fused = to_numpy(theirs(q, v))  # Keras' fused path skips the override
    assert np.max(np.abs(fused - to_numpy(explicit))) > 1e-3
    assert not hasattr(ours, "_softmax") and hasattr(theirs, "_softmax")


# Row 11: keys and values are not repeated ------------------------------------------


def test_row11_grouped_keys_are_not_repeated():
    # The layer hands the core (B, Tv, Hkv, D) keys: a subclass's hook sees them.
    seen = {}

    class Spy(layers.GroupedQueryAttention):
        def _compute_attention(self, query, key, value, *args, **kwargs):
            seen["key"], seen["query"] = tuple(key.shape), tuple(query.shape)
            return super()._compute_attention(query, key, value, *args, **kwargs)

    q, v = _data()
    Spy(4, 4, 1)(q, v)
    assert seen["query"] == (B, TQ, 4, 4) and seen["key"] == (B, TV, 1, 4)


# Row 12: no mask warning from the projections ---------------------------------------


def test_row12_no_warning_with_keras_masks():
    tokens = np.array([[3, 1, 4, 0], [2, 7, 1, 8]])
    x = keras.layers.Embedding(10, D, mask_zero=True)(tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layers.GroupQueryAttention(4, 2, 1)(x, x)
    with pytest.warns(UserWarning, match="destroy the mask"):
        keras.layers.GroupQueryAttention(4, 2, 1)(x, x)


# Row 13: extras, whose defaults reproduce Keras ---------------------------------------


def test_row13_extras_default_to_keras():
    q, v = _data()
    for name in ("Attention", "AdditiveAttention"):
        ours, theirs = _pair(name)
        np.testing.assert_allclose(
            to_numpy(ours([q, v])), to_numpy(theirs([q, v])), atol=ATOL, err_msg=name
        )
    assert layers.Attention(score_mode="cosine", sliding_window=2)([q, v]).shape == (B, TQ, D)
    assert layers.MultiHeadAttention(2, 4, num_key_value_heads=1)(q, v).shape == (B, TQ, D)
