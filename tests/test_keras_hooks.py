"""Code written against Keras' protected hooks runs on attnkit's layers.

Each subclass body below is written once, Keras-style, and mixed into both the
Keras layer and attnkit's: with the same weights they give the same outputs,
and both match a float64 NumPy reference.
"""

import keras
import numpy as np
import pytest
from keras import ops

import attnkit
from attnkit.testing.reference import reference_masked_softmax

B, TQ, TV, D, H, DK = 2, 5, 5, 8, 2, 4
ATOL = 2e-5


def to_numpy(x):
    return ops.convert_to_numpy(x)


def _data(seed=0, tq=TQ, tv=TV):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, tq, D)).astype("float32"),
        rng.normal(size=(B, tv, D)).astype("float32"),
    )


def _value_mask(tv=TV):
    return np.arange(tv)[None, :] < np.array([[tv], [tv - 2]])  # (B, Tv)


# A relative-position bias added to the scores, then the layer's own masked
# softmax: the classic Keras subclass (T5/Shaw-style biases are written this way).
class RelativeBias:
    def _compute_attention(
        self, query, key, value, attention_mask=None, training=None, return_attention_scores=False
    ):
        query = ops.multiply(query, ops.cast(1.0 / np.sqrt(self._key_dim), query.dtype))
        scores = ops.einsum("bkhd,bqhd->bhqk", key, query)  # (B, H, Tq, Tv)
        tq, tv = scores.shape[-2], scores.shape[-1]
        distance = np.arange(tv)[None, :] - np.arange(tq)[:, None]
        bias = ops.cast(0.1 * np.tanh(distance / 2.0), scores.dtype)  # (Tq, Tv)
        weights = self._masked_softmax(scores + bias, attention_mask)
        out = ops.einsum("bhqk,bkhd->bqhd", weights, value)
        return out, weights


class KerasRelative(RelativeBias, keras.layers.MultiHeadAttention):
    pass


class AttnkitRelative(RelativeBias, attnkit.layers.MultiHeadAttention):
    pass


def _reference_relative(layer, q, v, mask):
    w = {x.path.split("/", 1)[1]: to_numpy(x).astype(np.float64) for x in layer.weights}

    def proj(x, name):
        return np.einsum("btd,dhk->bthk", x, w[f"{name}/kernel"]) + w[f"{name}/bias"]

    qh, kh, vh = proj(q, "query"), proj(v, "key"), proj(v, "value")
    scores = np.einsum("bqhd,bkhd->bhqk", qh / np.sqrt(DK), kh)
    distance = np.arange(TV)[None, :] - np.arange(TQ)[:, None]
    weights = reference_masked_softmax(scores + 0.1 * np.tanh(distance / 2.0), mask[:, None])
    out = np.einsum("bhqk,bkhd->bqhd", weights, vh)
    out = np.einsum("bqhd,hdo->bqo", out, w["attention_output/kernel"])
    return out + w["attention_output/bias"], weights


@pytest.mark.parametrize("causal", (False, True))
def test_compute_attention_override_matches_keras_and_reference(causal):
    q, v = _data()
    value_mask = _value_mask()
    theirs, ours = KerasRelative(num_heads=H, key_dim=DK), AttnkitRelative(num_heads=H, key_dim=DK)
    theirs(q, v)
    ours(q, v)
    ours.set_weights(theirs.get_weights())
    kwargs = dict(value_mask=value_mask, use_causal_mask=causal, return_attention_scores=True)
    out, scores = ours(q, v, **kwargs)
    keras_out, keras_scores = theirs(q, v, **kwargs)
    mask = np.broadcast_to(value_mask[:, None, :], (B, TQ, TV))
    if causal:
        mask = mask & np.tril(np.ones((TQ, TV), bool))
    expected, expected_scores = _reference_relative(ours, q, v, mask)
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), expected_scores, atol=ATOL)
    np.testing.assert_allclose(to_numpy(out), to_numpy(keras_out), atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), to_numpy(keras_scores), atol=ATOL)


def test_compute_attention_override_gets_the_sliding_window_in_its_mask():
    q, _ = _data()
    layer = AttnkitRelative(num_heads=H, key_dim=DK, sliding_window=2)
    _, scores = layer(q, q, use_causal_mask=True, return_attention_scores=True)
    visible = np.tril(np.ones((TQ, TQ), bool)) & ~np.tril(np.ones((TQ, TQ), bool), -2)
    scores = to_numpy(scores)
    assert np.all(scores[:, :, ~visible] == 0)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-6)


def test_masked_softmax_override_is_used():
    class Tempered(attnkit.layers.MultiHeadAttention):
        def _masked_softmax(self, attention_scores, attention_mask=None):
            return super()._masked_softmax(attention_scores * 0.0, attention_mask)

    q, v = _data()
    layer = Tempered(num_heads=H, key_dim=DK)
    _, scores = layer(q, v, value_mask=_value_mask(), return_attention_scores=True)
    expected = np.broadcast_to(
        _value_mask()[:, None, None, :] / _value_mask().sum(-1)[:, None, None, None], (B, H, TQ, TV)
    )
    np.testing.assert_allclose(to_numpy(scores), expected, atol=1e-6)


def test_base_hooks_equal_the_layers_own_path():
    """The explicit Keras path (scores -> _masked_softmax) equals the core's."""
    q, v = _data()
    layer = attnkit.layers.MultiHeadAttention(num_heads=4, key_dim=DK, num_key_value_heads=2)
    out, scores = layer(q, v, value_mask=_value_mask(), return_attention_scores=True)

    class Explicit(attnkit.layers.MultiHeadAttention):
        def _masked_softmax(self, attention_scores, attention_mask=None):
            return super()._masked_softmax(attention_scores, attention_mask)

    explicit = Explicit(num_heads=4, key_dim=DK, num_key_value_heads=2)
    explicit(q, v)
    explicit.set_weights(layer.get_weights())
    out2, scores2 = explicit(q, v, value_mask=_value_mask(), return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(out2), to_numpy(out), atol=1e-5)
    np.testing.assert_allclose(to_numpy(scores2), to_numpy(scores), atol=1e-6)


# keras-hub's CachedMultiHeadAttention, written against the parent's sublayers and
# _compute_attention: a call that updates a (B, 2, S, H, D) cache first.
class HubStyleCache:
    def call(
        self, query, value, key=None, attention_mask=None, cache=None, cache_update_index=None
    ):
        key = value if key is None else key
        query = self._query_dense(query)
        if cache is not None:
            key_update, value_update = self._key_dense(key), self._value_dense(value)
            start = [0, cache_update_index, 0, 0]
            key = ops.slice_update(cache[:, 0, ...], start, key_update)
            value = ops.slice_update(cache[:, 1, ...], start, value_update)
            cache = ops.stack((key, value), axis=1)
        else:
            key, value = self._key_dense(key), self._value_dense(value)
        out, _ = self._compute_attention(
            query=query, key=key, value=value, attention_mask=attention_mask, training=None
        )
        out = self._output_dense(out)
        return out if cache is None else (out, cache)


class KerasCached(HubStyleCache, keras.layers.MultiHeadAttention):
    pass


class AttnkitCached(HubStyleCache, attnkit.layers.MultiHeadAttention):
    pass


def test_keras_hub_style_cache_decodes_like_the_whole_sequence():
    x, _ = _data(seed=3)
    causal = np.tril(np.ones((TQ, TQ), bool))[None]  # (1, T, T)
    theirs, ours = KerasCached(num_heads=H, key_dim=DK), AttnkitCached(num_heads=H, key_dim=DK)
    theirs(x, x)
    ours(x, x)
    ours.set_weights(theirs.get_weights())
    full = to_numpy(ours(x, x, attention_mask=np.broadcast_to(causal, (B, TQ, TQ))))
    np.testing.assert_allclose(
        full, to_numpy(theirs(x, x, attention_mask=np.broadcast_to(causal, (B, TQ, TQ)))), atol=ATOL
    )
    cache = np.zeros((B, 2, TQ, H, DK), "float32")
    for t in range(TQ):
        step_mask = np.broadcast_to(np.arange(TQ)[None, None, :] <= t, (B, 1, TQ))
        out, cache = ours(
            x[:, t : t + 1],
            x[:, t : t + 1],
            attention_mask=step_mask,
            cache=cache,
            cache_update_index=t,
        )
        np.testing.assert_allclose(to_numpy(out)[:, 0], full[:, t], atol=ATOL)
    # attnkit's own cache arguments give the same steps.
    own = attnkit.layers.MultiHeadAttention(num_heads=H, key_dim=DK)
    own(x, x)
    own.set_weights(ours.get_weights())
    cache = np.zeros((B, 2, TQ, H, DK), "float32")
    for t in range(TQ):
        out, cache = own(
            x[:, t : t + 1],
            x[:, t : t + 1],
            use_causal_mask=True,
            cache=cache,
            cache_update_index=t,
        )
        np.testing.assert_allclose(to_numpy(out)[:, 0], full[:, t], atol=ATOL)


# Attention: a subclass that overrides only the score hook (here a learned-free
# "distance" score), as Keras' AdditiveAttention does.
class NegativeDistance:
    def _calculate_scores(self, query, key):
        q2 = ops.sum(ops.square(query), axis=-1)[..., :, None]
        k2 = ops.sum(ops.square(key), axis=-1)[..., None, :]
        return -(q2 + k2 - 2.0 * ops.matmul(query, ops.swapaxes(key, -1, -2)))


class KerasDistance(NegativeDistance, keras.layers.Attention):
    pass


class AttnkitDistance(NegativeDistance, attnkit.layers.Attention):
    pass


@pytest.mark.parametrize("causal", (False, True))
def test_calculate_scores_override_matches_keras_and_reference(causal):
    q, v = _data(seed=1, tq=4, tv=6)
    value_mask = _value_mask(6)
    kwargs = dict(mask=[None, value_mask], use_causal_mask=causal, return_attention_scores=True)
    out, scores = AttnkitDistance()([q, v], **kwargs)
    keras_out, keras_scores = KerasDistance()([q, v], **kwargs)
    q64, v64 = q.astype(np.float64), v.astype(np.float64)
    logits = -((q64[:, :, None, :] - v64[:, None, :, :]) ** 2).sum(-1)
    mask = np.broadcast_to(value_mask[:, None, :], logits.shape)
    if causal:
        mask = mask & np.tril(np.ones((4, 6), bool))
    weights = reference_masked_softmax(logits, mask)
    np.testing.assert_allclose(to_numpy(scores), weights, atol=ATOL)
    np.testing.assert_allclose(to_numpy(out), weights @ v64, atol=ATOL)
    np.testing.assert_allclose(to_numpy(out), to_numpy(keras_out), atol=ATOL)
    np.testing.assert_allclose(to_numpy(scores), to_numpy(keras_scores), atol=ATOL)


def test_calculate_scores_override_runs_on_the_chunked_path():
    """The core evaluates an overridden score hook block by block on long inputs."""
    rng = np.random.default_rng(2)
    q, v = (rng.normal(size=(1, n, D)).astype("float32") * 0.3 for n in (1100, 1000))
    layer = AttnkitDistance()
    out = to_numpy(layer([q, v]))
    _, weights = layer([q, v], return_attention_scores=True)  # the naive path
    np.testing.assert_allclose(out, to_numpy(weights) @ v, atol=1e-5)


def test_attention_hooks_are_keras_compatible():
    """Keras' own hook calls work on attnkit's Attention (as Keras' tests call them)."""
    layer = attnkit.layers.Attention(use_scale=False)
    q, v = _data(seed=4, tq=3, tv=4)
    layer([q, v])
    scores = layer._calculate_scores(query=q, key=v)
    np.testing.assert_allclose(to_numpy(scores), q @ v.transpose(0, 2, 1), atol=1e-5)
    scaled = attnkit.layers.Attention(use_scale=True)
    scaled.build([q.shape, v.shape])
    scaled.scale.assign(2.0)
    np.testing.assert_allclose(  # NumPy inputs, as Keras' own test passes them
        to_numpy(scaled._calculate_scores(q, v)), 2.0 * (q @ v.transpose(0, 2, 1)), atol=1e-5
    )
    mask = layer._calculate_score_mask(scores, v_mask=None, use_causal_mask=True)
    np.testing.assert_array_equal(to_numpy(mask)[0], np.tril(np.ones((3, 4), bool)))
    out, weights = layer._apply_scores(scores, v, scores_mask=mask)
    expected = reference_masked_softmax(
        to_numpy(scores).astype(np.float64), np.tril(np.ones((3, 4), bool))[None]
    )
    np.testing.assert_allclose(to_numpy(weights), expected, atol=1e-6)
    np.testing.assert_allclose(to_numpy(out), expected @ v, atol=1e-5)


def test_apply_scores_override_takes_the_explicit_path():
    class Sharpened(attnkit.layers.Attention):
        def _apply_scores(self, scores, value, scores_mask=None, training=False):
            return super()._apply_scores(scores * 2.0, value, scores_mask, training)

    q, v = _data(seed=5, tq=3, tv=4)
    query_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    out, weights = Sharpened()([q, v], mask=[query_mask, None], return_attention_scores=True)
    logits = 2.0 * (q.astype(np.float64) @ v.astype(np.float64).transpose(0, 2, 1))
    expected = reference_masked_softmax(
        logits, np.broadcast_to(query_mask[:, :, None], logits.shape)
    )
    np.testing.assert_allclose(to_numpy(weights), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(out), expected @ v, atol=1e-5)
    assert np.all(to_numpy(out)[0, 2] == 0)
