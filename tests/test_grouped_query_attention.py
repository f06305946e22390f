"""attnkit.layers.GroupedQueryAttention: parity with keras.layers.GroupQueryAttention
(Keras 3.15), equivalence with MultiHeadAttention, implementations, the cache."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

import attnkit
from attnkit.layers import GroupedQueryAttention, GroupQueryAttention, MultiHeadAttention
from attnkit.testing.reference import reference_multi_head_attention

ATOL = 1e-5
B, TQ, TV, D = 2, 4, 6, 8  # the shapes of test_multi_head_attention (one JAX compile)


def _data(tq=TQ, tv=TV, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, tq, D)).astype("float32"),
        rng.normal(size=(B, tv, D)).astype("float32"),
    )


def _paired(q, v, **kwargs):
    """attnkit and Keras layers with the same (random, non-zero bias) weights."""
    theirs = keras.layers.GroupQueryAttention(**kwargs)
    theirs(q, v)
    rng = np.random.default_rng(5)
    theirs.set_weights(
        [rng.normal(size=w.shape).astype("float32") * 0.5 for w in theirs.get_weights()]
    )
    ours = GroupedQueryAttention(**kwargs)
    ours(q, v)
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def test_keras_spelling_is_the_same_class():
    assert GroupQueryAttention is GroupedQueryAttention
    assert attnkit.GroupQueryAttention is attnkit.GroupedQueryAttention is GroupedQueryAttention
    assert issubclass(GroupedQueryAttention, MultiHeadAttention)  # shared code, no copy


def test_weights_match_keras_names_and_shapes():
    q, v = _data()
    kwargs = dict(head_dim=3, num_query_heads=4, num_key_value_heads=2, use_gate=True)
    ours, theirs = _paired(q, v, **kwargs)

    def layout(layer):
        return [(w.path.split("/", 1)[1], tuple(w.shape)) for w in layer.weights]

    assert layout(ours) == layout(theirs)
    # Keras' weightless Softmax and Dropout sublayers have no attnkit twin.
    names = [s.name for s in theirs._layers if s.weights]
    assert [s.name for s in ours._layers] == names


_LAYERS = {
    "plain": {"head_dim": 4, "num_query_heads": 4, "num_key_value_heads": 2},
    "mqa_gate": {"head_dim": 3, "num_query_heads": 4, "num_key_value_heads": 1, "use_gate": True},
    "window": {"head_dim": 2, "num_query_heads": 2, "num_key_value_heads": 2, "sliding_window": 2},
    "no_bias": {"head_dim": 4, "num_query_heads": 4, "num_key_value_heads": 2, "use_bias": False},
}


@pytest.mark.parametrize(
    "layer_id,masking",
    [("plain", m) for m in ("causal", "masks", "attention_causal")]
    + [("mqa_gate", "masks"), ("window", "none"), ("window", "causal"), ("no_bias", "causal")],
)
def test_parity_with_keras(layer_id, masking):
    q, v = _data()
    ours, theirs = _paired(q, v, **_LAYERS[layer_id])
    call = {}
    valid = np.ones((B, TQ), bool)
    if masking in ("causal", "attention_causal"):
        call["use_causal_mask"] = True
    if masking == "masks":
        # Explicit query/value/key masks, as Keras fills them from Keras masks.
        valid = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
        call["query_mask"] = valid
        call["value_mask"] = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 1]], bool)
        call["key_mask"] = np.array([[1, 1, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1]], bool)
    if masking == "attention_causal":
        call["attention_mask"] = np.random.default_rng(2).random((B, TQ, TV)) > 0.3
        call["attention_mask"][:, :, 0] = True
    out, scores = ours(q, v, return_attention_scores=True, **call)
    k_out, k_scores = theirs(q, v, return_attention_scores=True, **call)
    # A padded query: Keras returns a softmax row, attnkit zero weights (docs/KERAS_DIFFERENCES.md).
    np.testing.assert_allclose(to_numpy(out)[valid], to_numpy(k_out)[valid], atol=ATOL)
    np.testing.assert_allclose(
        to_numpy(scores).transpose(0, 2, 1, 3)[valid],
        to_numpy(k_scores).transpose(0, 2, 1, 3)[valid],
        atol=ATOL,
    )
    # Without scores both take their fast paths (Keras: dot_product_attention).
    fast = to_numpy(ours(q, v, **call))
    np.testing.assert_allclose(fast, to_numpy(out), atol=ATOL)
    np.testing.assert_allclose(fast[valid], to_numpy(theirs(q, v, **call))[valid], atol=ATOL)


# Keras' projections warn that they destroy the mask (attnkit's pass it quietly).
@pytest.mark.filterwarnings("ignore:Layer '(query|key|value)'")
def test_parity_with_keras_masks_from_keras_masking():
    # Keras masks on the inputs (an Embedding's mask_zero) reach both layers.
    tokens = np.array([[3, 1, 4, 0], [2, 7, 1, 8]])
    embed = keras.layers.Embedding(10, D, mask_zero=True)
    x = embed(tokens)
    kwargs = _LAYERS["plain"]
    theirs = keras.layers.GroupQueryAttention(**kwargs)
    ours = GroupedQueryAttention(**kwargs)
    theirs(x, x)
    ours(x, x)
    ours.set_weights(theirs.get_weights())
    valid = tokens != 0
    got, want = to_numpy(ours(x, x)), to_numpy(theirs(x, x))
    np.testing.assert_allclose(got[valid], want[valid], atol=ATOL)


def test_keras_config_loads_and_round_trips():
    kwargs = dict(
        head_dim=4, num_query_heads=4, num_key_value_heads=2, use_gate=True, sliding_window=3
    )
    theirs = keras.layers.GroupQueryAttention(dropout=0.1, seed=3, **kwargs)
    ours = GroupedQueryAttention.from_config(theirs.get_config())
    assert (ours.head_dim, ours.num_query_heads, ours.num_key_value_heads) == (4, 4, 2)
    assert (ours.num_repeats, ours.use_gate, ours.sliding_window) == (2, True, 3)
    assert (ours.dropout, ours.seed) == (0.1, 3)
    config = ours.get_config()
    assert set(theirs.get_config()) <= set(config)  # plus flash_attention, implementation
    assert "num_heads" not in config and "key_dim" not in config
    assert GroupedQueryAttention.from_config(config).get_config() == config


def test_equals_multi_head_attention_with_the_same_weights():
    q, v = _data()
    gqa = GroupedQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2)
    mha = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
    gqa(q, v)
    mha(q, v)
    mha.set_weights(gqa.get_weights())
    got = to_numpy(gqa(q, v, use_causal_mask=True))
    np.testing.assert_array_equal(got, to_numpy(mha(q, v, use_causal_mask=True)))


def test_matches_float64_reference():
    q, v = _data()
    layer = GroupedQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=1)
    out = to_numpy(layer(q, v, use_causal_mask=True))
    weights = {x.path.split("/", 1)[1]: to_numpy(x) for x in layer.weights}
    want, _ = reference_multi_head_attention(weights, q, v, causal=True, alignment="top_left")
    np.testing.assert_allclose(out, want, atol=ATOL)


@pytest.mark.parametrize("implementation", ["naive", "chunked", "fused"])
def test_implementations_agree(implementation):
    q, v = _data()
    kwargs = dict(head_dim=4, num_query_heads=4, num_key_value_heads=2, sliding_window=3)
    base = GroupedQueryAttention(implementation="naive", **kwargs)
    other = GroupedQueryAttention(implementation=implementation, **kwargs)
    base(q, v)
    other(q, v)
    other.set_weights(base.get_weights())
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 1]], bool)
    call = dict(use_causal_mask=True, value_mask=mask)
    np.testing.assert_allclose(
        to_numpy(other(q, v, **call)), to_numpy(base(q, v, **call)), atol=ATOL
    )


def test_cached_decoding_equals_causal_call():
    x, _ = _data(tq=6)
    layer = GroupedQueryAttention(head_dim=2, num_query_heads=4, num_key_value_heads=2)
    full = to_numpy(layer(x, x, use_causal_mask=True))
    cache = np.zeros((B, 2, 6, 2, 2), "float32")
    steps = []
    for t in range(6):
        out, cache = layer(
            x[:, t : t + 1],
            x[:, t : t + 1],
            cache=cache,
            cache_update_index=keras.ops.convert_to_tensor(t, dtype="int32"),
        )
        steps.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=ATOL)


def test_prefill_is_bottom_right_aligned():
    # Two new tokens written at positions 4, 5 of a cache holding 0..3: query i
    # sees cache[: 4 + i + 1], i.e. the causal mask aligned to the bottom right.
    x, _ = _data(tq=6)
    layer = GroupedQueryAttention(head_dim=2, num_query_heads=2, num_key_value_heads=1)
    full = to_numpy(layer(x, x, use_causal_mask=True))
    cache = np.zeros((B, 2, 6, 1, 2), "float32")
    _, cache = layer(x[:, :4], x[:, :4], cache=cache, cache_update_index=0, use_causal_mask=True)
    out, _ = layer(x[:, 4:], x[:, 4:], cache=cache, cache_update_index=4, use_causal_mask=True)
    np.testing.assert_allclose(to_numpy(out), full[:, 4:], atol=ATOL)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_query_heads=4, num_key_value_heads=3), r"`num_query_heads` must be divisible"),
        (dict(num_query_heads=4, num_key_value_heads=0), r"Received: num_key_value_heads=0"),
        (dict(num_query_heads=0, num_key_value_heads=1), r"Received: num_query_heads=0"),
        (dict(head_dim=0), r"Received: head_dim=0"),
        (dict(sliding_window=0), r"Received: sliding_window=0"),
    ],
)
def test_constructor_errors(kwargs, match):
    kwargs = {"head_dim": 2, "num_query_heads": 2, "num_key_value_heads": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        GroupedQueryAttention(**kwargs)


def test_rank_other_than_three_is_refused():
    x = np.zeros((B, 3, 2, D), "float32")
    layer = GroupedQueryAttention(head_dim=2, num_query_heads=2, num_key_value_heads=1)
    with pytest.raises(ValueError, match=r"`query` must have rank 3.*Received: query_shape="):
        layer(x, x)
