"""attnkit.layers.AttentionPooling: HAN and Raffel & Ellis feed-forward pooling."""

import keras
import numpy as np
import pytest

from attnkit.layers import AttentionPooling
from attnkit.testing.contract import run_layer_contract
from attnkit.testing.reference import (
    reference_attention_pool,
    reference_feedforward_scores,
    reference_han_scores,
)

B, T, D = 3, 7, 5
ATOL = 1e-5


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def _data(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, D)).astype("float32")


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    return {w.name: to_numpy(w).astype(np.float64) for w in layer.weights}


@pytest.mark.parametrize(
    "kwargs,out_shape,scores_shape",
    [
        ({"units": 6}, (B, D), (B, T)),
        ({"units": 4, "num_queries": 3, "use_bias": False}, (B, 3, D), (B, 3, T)),
        ({"score": "feedforward", "dropout": 0.1, "seed": 3}, (B, D), (B, T)),
    ],
    ids=["han", "han_queries", "feedforward_dropout"],
)
def test_contract(kwargs, out_shape, scores_shape):
    run_layer_contract(
        AttentionPooling,
        kwargs,
        [(B, T, D)],
        expected_output_shape=out_shape,
        expected_scores_shape=scores_shape,
        mask_input=0,
        expected_mask=lambda masks: None,
    )


MASKS = {
    "none": np.ones((B, T), bool),
    "padding": np.arange(T)[None, :] < np.array([7, 4, 1])[:, None],
    "holes": np.array([[1, 0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 0]], bool),
}


@pytest.mark.parametrize(
    "mask_name,num_queries,use_bias",
    [("none", 1, True), ("padding", 2, False), ("holes", 1, False), ("holes", 3, True)],
)
def test_han_matches_float64_reference(mask_name, num_queries, use_bias):
    h, mask = _data(), MASKS[mask_name]
    layer = AttentionPooling(units=4, num_queries=num_queries, use_bias=use_bias)
    layer(h)
    w = _randomize(layer)
    out, alpha = layer(h, mask=mask, return_attention_scores=True)
    scores = reference_han_scores(h, w["kernel"], w["context"], w.get("bias"))
    ref_out, ref_alpha = reference_attention_pool(h, scores, mask)
    if num_queries == 1:
        ref_out, ref_alpha = ref_out[:, 0], ref_alpha[:, 0]
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(alpha), ref_alpha, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize(
    "mask_name,num_queries,use_bias",
    [("none", 1, True), ("padding", 2, False), ("holes", 1, False), ("holes", 3, True)],
)
def test_feedforward_matches_float64_reference(mask_name, num_queries, use_bias):
    h, mask = _data(), MASKS[mask_name]
    layer = AttentionPooling(score="feedforward", num_queries=num_queries, use_bias=use_bias)
    layer(h)
    w = _randomize(layer)
    bias = w.get("bias", np.zeros(num_queries))
    out, alpha = layer(h, mask=mask, return_attention_scores=True)
    scores = reference_feedforward_scores(h, w["kernel"], bias)
    ref_out, ref_alpha = reference_attention_pool(h, scores, mask)
    if num_queries == 1:
        ref_out, ref_alpha = ref_out[:, 0], ref_alpha[:, 0]
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(alpha), ref_alpha, atol=ATOL, rtol=1e-5)


def test_hand_derived_feedforward_case():
    # w = 0, b = 0: every e_t = tanh(0) = 0, so α is uniform over the kept steps.
    h = np.arange(2 * 4 * 2, dtype="float32").reshape(2, 4, 2)
    layer = AttentionPooling(score="feedforward", kernel_initializer="zeros")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    out, alpha = layer(h, mask=mask, return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(alpha), [[0.5, 0.5, 0, 0], [0.25] * 4])
    np.testing.assert_allclose(to_numpy(out), [[1.0, 2.0], [11.0, 12.0]], atol=1e-6)


@pytest.mark.parametrize("score", ["han", "feedforward"])
def test_masked_steps_get_exactly_zero_weight_and_full_mask_gives_zeros(score):
    h = _data() * 50.0  # large inputs: masked logits would dominate if they leaked
    mask = MASKS["padding"].copy()
    mask[1] = False  # sequence 1 entirely masked
    layer = AttentionPooling(score=score)
    out, alpha = layer(h, mask=mask, return_attention_scores=True)
    out, alpha = to_numpy(out), to_numpy(alpha)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(alpha))
    np.testing.assert_array_equal(alpha[~mask], 0.0)
    np.testing.assert_array_equal(alpha[1], 0.0)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_allclose(alpha[[0, 2]].sum(-1), 1.0, atol=1e-6)


def test_fully_masked_gradients_are_finite():
    h = keras.ops.convert_to_tensor(_data())
    mask = np.zeros((B, T), bool)
    layer = AttentionPooling(units=4)
    layer(h)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss(weights):
            values = layer.stateless_call(weights, [], h, mask=mask)[0]
            return keras.ops.sum(values)

        grads = jax.grad(loss)([v.value for v in layer.trainable_variables])
    elif backend == "torch":
        loss = keras.ops.sum(layer(h, mask=mask))
        loss.backward()
        grads = [v.value.grad for v in layer.trainable_variables]
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = keras.ops.sum(layer(h, mask=mask))
        grads = tape.gradient(loss, [v.value for v in layer.trainable_variables])
    for g in grads:
        g = np.zeros(1) if g is None else to_numpy(g)
        assert np.all(np.isfinite(g))


def test_keras_mask_equals_explicit_mask():
    ids = np.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5], [6, 0, 0, 0, 0]])
    embedding = keras.layers.Embedding(10, D, mask_zero=True)
    layer = AttentionPooling(units=3)
    emb = embedding(ids)
    implicit, implicit_alpha = layer(emb, return_attention_scores=True)
    plain = keras.ops.convert_to_tensor(to_numpy(emb))
    explicit, explicit_alpha = layer(plain, mask=ids != 0, return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(implicit), to_numpy(explicit))
    np.testing.assert_array_equal(to_numpy(implicit_alpha), to_numpy(explicit_alpha))
    assert not np.allclose(to_numpy(layer(plain)), to_numpy(explicit))


def test_units_default_to_input_size_and_attention_dim_alias():
    layer = AttentionPooling()
    layer(_data())
    assert tuple(layer.kernel.shape) == (D, D) and tuple(layer.context.shape) == (D, 1)
    alias = AttentionPooling(attention_dim=64)
    assert alias.units == 64 and alias.get_config()["units"] == 64
    alias(_data())
    assert tuple(alias.kernel.shape) == (D, 64)
    assert [w.name for w in AttentionPooling(score="feedforward").weights] == []
    ff = AttentionPooling(score="feedforward")
    ff(_data())
    assert [(w.name, tuple(w.shape)) for w in ff.weights] == [
        ("kernel", (D, 1)),
        ("bias", (1,)),
    ]


def test_dropout_only_in_training_and_seeded():
    h = _data()
    layer = AttentionPooling(units=4, dropout=0.5, seed=7)
    inference = to_numpy(layer(h))
    np.testing.assert_array_equal(to_numpy(layer(h, training=False)), inference)
    trained = to_numpy(layer(h, training=True))
    assert not np.allclose(trained, inference)
    _, alpha = layer(h, training=True, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(alpha).sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"units": 0}, "Received: units=0"),
        ({"units": 2.5}, "Received: units=2.5"),
        ({"num_queries": 0}, "Received: num_queries=0"),
        ({"score": "dot"}, "Received: score='dot'"),
        ({"score": "feedforward", "units": 8}, "Received: units=8"),
        ({"use_bias": 1}, "Received: use_bias=1"),
        ({"dropout": 1.0}, "Received: dropout=1.0"),
        ({"seed": "x"}, "Received: seed='x'"),
        ({"units": 4, "attention_dim": 4}, "Received: units=4, attention_dim=4"),
        ({"attention_dim": -1}, "Received: attention_dim=-1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionPooling(**kwargs)


def test_bad_input_rank():
    with pytest.raises(ValueError, match=r"Received: input_shape=\(3, 5\)"):
        AttentionPooling()(np.zeros((3, 5), "float32"))


# The two hand-written layers our users copy, run as written with the import
# `from attnkit.layers import AttentionPooling as AttentionLayer`.


def test_seed_001_sequential_example():
    from keras.layers import LSTM, Dense
    from keras.models import Sequential

    from attnkit.layers import AttentionPooling as AttentionLayer

    model = Sequential()
    model.add(keras.Input((10, 32)))
    model.add(LSTM(16, return_sequences=True))
    model.add(AttentionLayer(64))
    model.add(Dense(10, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 10, 32)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, size=32), 10)
    history = model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.layers[1].output.shape == (None, 16)
    assert model.predict(x[:2], verbose=0).shape == (2, 10)


# The article's code passes input_shape= to a layer, as written; Keras warns about it.
@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`:UserWarning")
def test_seed_001_input_shape_style():
    # The seed passes `input_shape=` to the LSTM, as Keras 2 code does.
    from keras.layers import LSTM, Dense
    from keras.models import Sequential

    from attnkit.layers import AttentionPooling as AttentionLayer

    model = Sequential()
    model.add(LSTM(8, return_sequences=True, input_shape=(10, 32)))
    model.add(AttentionLayer(64))
    model.add(Dense(10, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    assert model.predict(np.zeros((2, 10, 32), "float32"), verbose=0).shape == (2, 10)


def test_seed_003_bidirectional_example():
    from keras.layers import LSTM, Bidirectional, Dense, Embedding, Input
    from keras.models import Model

    from attnkit.layers import AttentionPooling as AttentionLayer

    sequence_input = Input(shape=(12,), dtype="int32")
    embedded_seq = Embedding(50, 8, mask_zero=True)(sequence_input)
    l_lstm = Bidirectional(LSTM(6, return_sequences=True))(embedded_seq)
    attenion = AttentionLayer()(l_lstm)
    preds = Dense(2, activation="softmax")(attenion)
    model = Model(sequence_input, preds)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    rng = np.random.default_rng(0)
    x = rng.integers(1, 50, size=(32, 12))
    x[:, 9:] = 0  # padding, masked by the embedding
    y = (x[:, 0] > 25).astype("int32")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    from attnkit.maps import attention_maps

    (weights,) = attention_maps(model, x[:2]).values()
    weights = np.asarray(weights)
    np.testing.assert_array_equal(weights[:, 9:], 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
