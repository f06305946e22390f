import keras
import numpy as np
import pytest
from conftest import to_numpy

import attnkit
from attnkit.layers import AdditiveAttention, Attention, AttentionPooling, MultiHeadAttention
from attnkit.maps import is_attention_layer
from attnkit.testing.contract import call_layer
from attnkit.testing.registry import EXAMPLES, build_model, find_layer, public_layers

B, TQ, TV, D = 3, 4, 6, 8
B_RNN, TY_RNN, TX_RNN = 2, 4, 7  # the registry's AttentionRNNCell example


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(B, TQ, D)).astype("float32"),
        rng.normal(size=(B, TV, D)).astype("float32"),
    ]


def _three_attention_model():
    """MultiHeadAttention, Attention and AdditiveAttention in one functional graph."""
    q_in, v_in = keras.Input((TQ, D), name="q"), keras.Input((TV, D), name="v")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    x = mha(q_in, v_in)  # (B, Tq, D)
    x = keras.layers.Dense(D, name="mix")(x)
    dot = keras.layers.Attention(name="dot")([x, v_in])  # (B, Tq, D)
    add = keras.layers.AdditiveAttention(name="additive")([v_in, dot])  # (B, Tv, D)
    y = keras.layers.GlobalAveragePooling1D()(add)
    return keras.Model([q_in, v_in], keras.layers.Dense(1)(y))


def test_three_attention_layers_give_weights_of_the_right_shapes():
    model = _three_attention_model()
    maps = attnkit.attention_maps(model, _data())
    assert set(maps) == {"mha", "dot", "additive"}
    assert maps["mha"].shape == (B, 2, TQ, TV)
    assert maps["dot"].shape == (B, TQ, TV)
    assert maps["additive"].shape == (B, TV, TQ)
    for w in maps.values():
        assert isinstance(w, np.ndarray)
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_weights_equal_a_direct_call_with_the_same_layer():
    model = _three_attention_model()
    q, v = _data(1)
    maps = attnkit.attention_maps(model, [q, v])
    _, expected = model.get_layer("mha")(q, v, return_attention_scores=True)
    np.testing.assert_allclose(maps["mha"], to_numpy(expected), rtol=1e-5, atol=1e-6)
    mixed = keras.Model(model.inputs, model.get_layer("mix").output).predict([q, v], verbose=0)
    _, expected = model.get_layer("dot")([mixed, v], return_attention_scores=True)
    np.testing.assert_allclose(maps["dot"], to_numpy(expected), rtol=1e-5, atol=1e-6)


def test_model_is_left_unchanged_and_trained_weights_are_used():
    model = _three_attention_model()
    data = _data(2)
    before = model.predict(data, verbose=0)
    n_layers = len(model.layers)
    first = attnkit.attention_maps(model, data)
    # Change the trained weights: the maps must follow (same layer objects, no copy).
    mha = model.get_layer("mha")
    mha.set_weights([w * 3.0 for w in mha.get_weights()])
    second = attnkit.attention_maps(model, data)
    assert not np.allclose(first["mha"], second["mha"])
    mha.set_weights([w / 3.0 for w in mha.get_weights()])
    np.testing.assert_allclose(model.predict(data, verbose=0), before, rtol=1e-5, atol=1e-6)
    assert len(model.layers) == n_layers


@pytest.mark.parametrize("source", ["keras", "attnkit"])
def test_self_attention_in_images_over_both_spatial_axes(source):
    if source == "keras":
        cls = keras.layers.MultiHeadAttention
    else:
        cls = MultiHeadAttention
    x_in = keras.Input((4, 5, 3))
    mha = cls(2, 4, attention_axes=(1, 2), name="spatial")
    model = keras.Model(x_in, mha(x_in, x_in))
    maps = attnkit.attention_maps(model, np.ones((2, 4, 5, 3), "float32"))
    assert maps["spatial"].shape == (2, 2, 4, 5, 4, 5)


def test_shared_layer_and_nested_model_are_keyed_apart():
    inner_in = keras.Input((TV, D))
    inner = keras.Model(
        inner_in,
        keras.layers.Attention(name="self")([inner_in, inner_in]),
        name="inner",
    )
    q_in, v_in = keras.Input((TQ, D)), keras.Input((TV, D))
    shared = keras.layers.MultiHeadAttention(1, 4, name="shared")
    a = shared(q_in, v_in)  # (B, Tq, D)
    b = shared(v_in, v_in)  # (B, Tv, D)
    c = inner(v_in)
    out = keras.layers.Concatenate(axis=1)([a, b, c])
    model = keras.Model([q_in, v_in], out)
    maps = attnkit.attention_maps(model, _data())
    assert maps["shared"].shape == (B, 1, TQ, TV)
    assert maps["shared:1"].shape == (B, 1, TV, TV)
    assert maps["inner/self"].shape == (B, TV, TV)


def test_sequential_model():
    class Pool(keras.layers.Layer):
        """Minimal attention pooling: softmax over time of a learned score."""

        def build(self, input_shape):
            self.score = keras.layers.Dense(1)
            self.score.build(input_shape)

        def call(self, x, return_attention_scores=False):
            w = keras.ops.softmax(self.score(x)[..., 0], axis=-1)  # (B, T)
            out = keras.ops.einsum("bt,btd->bd", w, x)
            return (out, w) if return_attention_scores else out

    model = keras.Sequential(
        [
            keras.Input((TV, D)),
            keras.layers.Dense(D),
            Pool(name="pool"),
            keras.layers.Dense(2),
        ]
    )
    maps = attnkit.attention_maps(model, _data()[1], batch_size=2)
    assert list(maps) == ["pool"]
    assert maps["pool"].shape == (B, TV)
    np.testing.assert_allclose(maps["pool"].sum(-1), 1.0, rtol=1e-5)


def test_implicit_padding_mask_reaches_the_layer():
    tokens = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(10, D, mask_zero=True)(tokens)
    y = keras.layers.Attention(name="dot")([x, x])  # passes the query mask on
    z = keras.layers.MultiHeadAttention(2, 4, name="mha")(y, y)
    model = keras.Model(tokens, z)
    ids = np.array([[3, 4, 0, 0, 0], [1, 2, 3, 4, 5]], "int32")
    maps = attnkit.attention_maps(model, ids)
    for name in ("mha", "dot"):
        w = maps[name]
        assert np.all(w[0, ..., 2:] == 0.0), name  # padded keys get no weight
        assert np.all(w[1] > 0.0), name
        # Valid queries of the padded example spread all their weight on its 2 tokens.
        np.testing.assert_allclose(w[0, ..., :2, :2].sum(-1), 1.0, rtol=1e-5)


def test_model_that_already_returns_scores():
    q_in, v_in = keras.Input((TQ, D)), keras.Input((TV, D))
    out, scores = keras.layers.Attention(name="att")([q_in, v_in], return_attention_scores=True)
    model = keras.Model([q_in, v_in], [out, scores])
    data = _data()
    maps = attnkit.attention_maps(model, data)
    np.testing.assert_allclose(maps["att"], model.predict(data, verbose=0)[1], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_registry_layer(name):
    """attention_maps finds exactly the layers with a scores flag, with the registry's shape."""
    example = EXAMPLES[name]
    cls = public_layers()[name]
    model, data = build_model(name, cls)
    layer = find_layer(model, cls)
    x = data if len(data) > 1 else data[0]
    if example.call_style == "rnn_cell":
        # The RNN over the cell gives its alignment history (tested in detail below).
        maps = attnkit.attention_maps(model, x)
        ((key, weights),) = maps.items()
        assert weights.shape == (B_RNN, TY_RNN, TX_RNN)
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
        return
    if example.scores_kwarg is None:
        assert not is_attention_layer(layer)
        with pytest.raises(ValueError, match=r"at least one attention layer"):
            attnkit.attention_maps(model, x)
        return
    assert example.scores_kwarg == "return_attention_scores"
    assert is_attention_layer(layer)
    maps = attnkit.attention_maps(model, x)
    assert list(maps) == [layer.name]
    assert maps[layer.name].shape == example.scores_shape
    # The same weights as calling the trained layer itself with the flag.
    _, expected = call_layer(
        layer, data, example.call_style, {**example.call_kwargs, example.scores_kwarg: True}
    )
    np.testing.assert_allclose(maps[layer.name], to_numpy(expected), rtol=1e-5, atol=1e-6)


def test_three_attnkit_and_keras_layers_in_one_model():
    attention, additive = Attention, AdditiveAttention
    q_in, v_in = keras.Input((TQ, D)), keras.Input((TV, D))
    x = attention(score_mode="general", name="luong")([q_in, v_in])  # (B, Tq, D)
    y = additive(units=6, name="bahdanau")([v_in, x])  # (B, Tv, D)
    z = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, y)  # (B, Tq, D)
    model = keras.Model([q_in, v_in], z)
    maps = attnkit.attention_maps(model, _data())
    assert {k: v.shape for k, v in maps.items()} == {
        "luong": (B, TQ, TV),
        "bahdanau": (B, TV, TQ),
        "mha": (B, 2, TQ, TV),
    }
    for w in maps.values():
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_attnkit_attention_pooling_in_a_masked_sequential_model():
    pooling = AttentionPooling
    model = keras.Sequential(
        [
            keras.Input((TV, 2)),
            keras.layers.Masking(0.0),
            keras.layers.Dense(D),
            pooling(units=6, name="pool"),
            keras.layers.Dense(1),
        ]
    )
    x = np.random.default_rng(0).normal(size=(B, TV, 2)).astype("float32")
    x[0, 4:] = 0.0  # padding
    maps = attnkit.attention_maps(model, x)
    assert maps["pool"].shape == (B, TV)
    assert np.all(maps["pool"][0, 4:] == 0.0)
    np.testing.assert_allclose(maps["pool"].sum(-1), 1.0, rtol=1e-5)


def test_is_attention_layer():
    assert is_attention_layer(keras.layers.MultiHeadAttention(1, 2))
    assert is_attention_layer(keras.layers.Attention())
    assert not is_attention_layer(keras.layers.Dense(1))
    assert not is_attention_layer(keras.Sequential([keras.layers.Dense(1)]))


def test_error_not_a_model():
    with pytest.raises(ValueError, match=r"Received: model=<Dense"):
        attnkit.attention_maps(keras.layers.Dense(1), np.ones((1, 2)))


def test_error_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.att = keras.layers.Attention()

        def call(self, x):
            return self.att([x, x])

    net = Net()
    net(np.ones((1, 2, 3), "float32"))
    with pytest.raises(ValueError, match=r"subclassed.*Received: model=Net"):
        attnkit.attention_maps(net, np.ones((1, 2, 3), "float32"))


def test_error_no_attention_layer():
    x = keras.Input((3,))
    model = keras.Model(x, keras.layers.Dense(1)(x), name="plain")
    with pytest.raises(ValueError, match=r"at least one attention layer.*Received: model='plain'"):
        attnkit.attention_maps(model, np.ones((1, 3), "float32"))


def test_error_unbuilt_sequential():
    model = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")
    with pytest.raises(ValueError, match=r"built model.*Received: model='unbuilt'"):
        attnkit.attention_maps(model, np.ones((1, 3), "float32"))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_error_batch_size(batch_size):
    with pytest.raises(ValueError, match=rf"Received: batch_size={batch_size!r}"):
        attnkit.attention_maps(_three_attention_model(), _data(), batch_size=batch_size)


# -- issue 19: a tensor keyword with a Python keyword; chunked and fused layers ------


def _mha_class(source):
    return keras.layers.MultiHeadAttention if source == "keras" else MultiHeadAttention


@pytest.mark.parametrize("source", ["keras", "attnkit"])
def test_tensor_and_python_keywords_together(source):
    """A causal decoder with padding: `attention_mask=m, use_causal_mask=True` in one call."""
    x_in = keras.Input((TV, D), name="x")
    m_in = keras.Input((TV, TV), dtype="bool", name="m")
    mha = _mha_class(source)(2, 4, name="mha")
    y = mha(x_in, x_in, attention_mask=m_in, use_causal_mask=True)
    model = keras.Model([x_in, m_in], keras.layers.Dense(1)(y))
    x = _data(3)[1]
    m = np.ones((B, TV, TV), bool)
    m[0, :, 4:] = False  # padding at the end of example 0
    maps = attnkit.attention_maps(model, [x, m])
    _, expected = mha(x, x, attention_mask=m, use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(maps["mha"], to_numpy(expected), rtol=1e-5, atol=1e-6)
    w = maps["mha"]
    assert np.all(np.triu(np.ones((TV, TV)), 1)[None, None] * w == 0.0)  # causal
    assert np.all(w[0, ..., 4:] == 0.0)  # padding


@pytest.mark.parametrize("implementation", ["chunked", "fused"])
def test_chunked_and_fused_layers_give_their_weights(implementation):
    x_in = keras.Input((TV, D))
    mha = MultiHeadAttention(2, 4, implementation=implementation, name="mha")
    model = keras.Model(x_in, mha(x_in, x_in, use_causal_mask=True))
    naive = MultiHeadAttention(2, 4, implementation="naive")
    x = _data(4)[1]
    naive(x, x)
    naive.set_weights(mha.get_weights())
    maps = attnkit.attention_maps(model, x)
    _, expected = naive(x, x, use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(maps["mha"], to_numpy(expected), rtol=1e-5, atol=1e-6)
    assert mha.implementation == implementation  # restored after extraction
    # The model itself still runs its own implementation (and still refuses the flag).
    np.testing.assert_allclose(
        model.predict(x, verbose=0), to_numpy(naive(x, x, use_causal_mask=True)), atol=1e-5
    )
    with pytest.raises(ValueError, match=implementation):
        mha(x, x, return_attention_scores=True)


def test_keras_flash_attention_layer_gives_its_weights():
    x_in = keras.Input((TV, D))
    mha = keras.layers.MultiHeadAttention(2, 4, name="mha", flash_attention=False)
    model = keras.Model(x_in, mha(x_in, x_in))
    x = _data(5)[1]
    _, expected = mha(x, x, return_attention_scores=True)
    mha._flash_attention = True  # as keras.config.enable_flash_attention() would set it
    maps = attnkit.attention_maps(model, x)
    np.testing.assert_allclose(maps["mha"], to_numpy(expected), rtol=1e-5, atol=1e-6)
    assert mha._flash_attention is True


# -- attention layers inside custom layers ------------------------------------------


class _Block(keras.layers.Layer):
    """A transformer-style block: its attention layers are attributes (Keras tracks them)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.self_attention = MultiHeadAttention(2, 4, name="self_attention")
        self.cross_attention = keras.layers.MultiHeadAttention(1, 4, name="cross_attention")
        self.norm = keras.layers.LayerNormalization()

    def call(self, x, memory, memory_mask=None):
        x = self.norm(x + self.self_attention(x, x, use_causal_mask=True))
        return x + self.cross_attention(x, memory, attention_mask=memory_mask)


class _Exposing(keras.layers.Layer):
    """Chooses what it exposes with `attention_layers()`: only the second of two."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Attention(name="hidden")
        self.shown = keras.layers.Attention(name="shown")

    def attention_layers(self):
        return [self.shown]

    def call(self, x):
        y = self.hidden([x, x])
        return self.shown([y, x]) + self.shown([x, y])


def test_attention_layers_inside_a_custom_layer():
    x_in, mem_in = keras.Input((TQ, D)), keras.Input((TV, D))
    mask_in = keras.Input((TQ, TV), dtype="bool")
    block = _Block(name="block")
    model = keras.Model([x_in, mem_in, mask_in], block(x_in, mem_in, memory_mask=mask_in))
    q, v = _data(6)
    m = np.ones((B, TQ, TV), bool)
    m[1, :, 3:] = False
    maps = attnkit.attention_maps(model, [q, v, m])
    assert list(maps) == ["block/self_attention", "block/cross_attention"]
    _, want_self = block.self_attention(q, q, use_causal_mask=True, return_attention_scores=True)
    x = block.norm(keras.ops.add(q, block.self_attention(q, q, use_causal_mask=True)))
    _, want_cross = block.cross_attention(x, v, attention_mask=m, return_attention_scores=True)
    np.testing.assert_allclose(maps["block/self_attention"], to_numpy(want_self), atol=1e-6)
    np.testing.assert_allclose(maps["block/cross_attention"], to_numpy(want_cross), atol=1e-5)
    assert np.all(maps["block/cross_attention"][1, ..., 3:] == 0.0)
    assert "call" not in vars(block.self_attention)  # the recording hook is gone
    np.testing.assert_allclose(
        model.predict([q, v, m], verbose=0), to_numpy(block(q, v, memory_mask=m)), atol=1e-5
    )


def test_attention_layers_method_chooses_what_is_found():
    x_in = keras.Input((TQ, D))
    layer = _Exposing(name="exposing")
    model = keras.Model(x_in, layer(x_in))
    q = _data(7)[0]
    maps = attnkit.attention_maps(model, q)
    assert list(maps) == ["exposing/shown", "exposing/shown:1"]  # called twice; hidden hidden
    y = layer.hidden([q, q])
    np.testing.assert_allclose(
        maps["exposing/shown"], to_numpy(layer.shown([y, q], return_attention_scores=True)[1])
    )
    np.testing.assert_allclose(
        maps["exposing/shown:1"], to_numpy(layer.shown([q, y], return_attention_scores=True)[1])
    )


def test_error_attention_layers_returns_a_non_attention_layer():
    class Bad(keras.layers.Layer):
        def attention_layers(self):
            return [keras.layers.Dense(2)]

        def call(self, x):
            return x

    x_in = keras.Input((TQ, D))
    model = keras.Model(x_in, Bad(name="bad")(x_in))
    with pytest.raises(ValueError, match=r"attention_layers\(\).*Received: <Dense.*layer='bad'"):
        attnkit.attention_maps(model, _data()[0])


# -- keras.layers.RNN(AttentionRNNCell(...)) ----------------------------------------


@pytest.mark.parametrize("history", [False, True])
def test_rnn_over_an_attention_cell_gives_every_step_alignment(history):
    from attnkit.layers import AttentionRNNCell, BahdanauAttention

    targets_in = keras.Input((TY_RNN, 3))
    memory_in = keras.Input((TX_RNN, D))
    cell = AttentionRNNCell(
        keras.layers.LSTMCell(6), BahdanauAttention(5), alignment_history=history
    )
    state = cell.get_initial_state(memory=memory_in)
    rnn = keras.layers.RNN(cell, return_sequences=True, name="decoder")
    model = keras.Model([targets_in, memory_in], rnn(targets_in, initial_state=state))
    rng = np.random.default_rng(8)
    targets = rng.normal(size=(B_RNN, TY_RNN, 3)).astype("float32")
    memory = rng.normal(size=(B_RNN, TX_RNN, D)).astype("float32")
    maps = attnkit.attention_maps(model, [targets, memory])
    assert list(maps) == ["decoder"]
    # Step the cell by hand: the alignment after each step.
    states, want = cell.get_initial_state(memory=memory), []
    for t in range(TY_RNN):
        _, states = cell(targets[:, t], states)
        want.append(to_numpy(cell.state_alignment(states)))
    np.testing.assert_allclose(maps["decoder"], np.stack(want, 1), rtol=1e-5, atol=1e-6)
    if history:  # the cell's own alignment history says the same
        _, alignments = cell.split_output(model.predict([targets, memory], verbose=0))
        np.testing.assert_allclose(maps["decoder"], alignments, rtol=1e-5, atol=1e-6)


# -- keras-hub ------------------------------------------------------------------------


def test_keras_hub_encoder_decoder_and_cached_attention():
    """A small randomly initialised model of keras-hub's layers (no download)."""
    keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed")
    tokens_in = keras.Input((TV,), dtype="int32")
    target_in = keras.Input((TQ, D))
    emb = keras.layers.Embedding(10, D, mask_zero=True)
    x = emb(tokens_in)
    encoder = keras_hub.layers.TransformerEncoder(16, 2, name="encoder")
    decoder = keras_hub.layers.TransformerDecoder(16, 2, name="decoder")
    cached = keras_hub.layers.CachedMultiHeadAttention(2, 4, name="cached")
    memory = encoder(x)
    y = decoder(target_in, memory, use_causal_mask=True)
    z = cached(y, memory)
    model = keras.Model([tokens_in, target_in], z)
    ids = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 8, 0, 0, 0, 0]], "int32")
    target = _data(9)[0]
    maps = attnkit.attention_maps(model, [ids, target])
    assert list(maps) == [
        "encoder",
        "decoder/self_attention",
        "decoder/cross_attention",
        "cached",
    ], list(maps)
    shapes = {"encoder": (B, 2, TV, TV), "cached": (B, 2, TQ, TV)}
    shapes.update({"decoder/self_attention": (B, 2, TQ, TQ)})
    shapes.update({"decoder/cross_attention": (B, 2, TQ, TV)})
    assert {k: v.shape for k, v in maps.items()} == shapes
    # The encoder's own return_attention_scores, on the same padded tokens.
    _, want = encoder(emb(ids), padding_mask=ids != 0, return_attention_scores=True)
    np.testing.assert_allclose(maps["encoder"], to_numpy(want), rtol=1e-5, atol=1e-6)
    assert np.all(maps["encoder"][0, ..., 3:] == 0.0)
    assert np.all(np.triu(np.ones((TQ, TQ)), 1) * maps["decoder/self_attention"] == 0.0)
    for name in ("decoder/cross_attention", "cached"):
        np.testing.assert_allclose(maps[name].sum(-1), 1.0, rtol=1e-5)
