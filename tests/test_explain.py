"""attnkit.explain against hand-checked examples and the float64 references."""

import keras
import numpy as np
import pytest

from attnkit import explain
from attnkit.layers import MultiHeadAttention
from attnkit.testing.explain_reference import (
    reference_classifier,
    reference_classifier_gradient,
    reference_flow,
    reference_gradient_rollout,
    reference_max_flow,
    reference_rollout,
)

B, T, D, H, C = 2, 5, 8, 2, 3


def _random_maps(rng, layers=3, heads=H, t=T, masked_row=True):
    maps = []
    for _ in range(layers):
        w = rng.random((B, heads, t, t)) ** 3
        if masked_row:
            w[0, :, 1] = 0.0  # a fully masked query: a zero row
        total = w.sum(-1, keepdims=True)
        maps.append(np.divide(w, total, out=np.zeros_like(w), where=total > 0))
    return maps


# -- rollout ----------------------------------------------------------------------------


def test_rollout_hand_checked():
    a = np.array([[[1.0, 0.0], [0.5, 0.5]]])  # (1, 2, 2), one head
    # Ã = 0.5·A + 0.5·I = [[1, 0], [0.25, 0.75]]; Ã·Ã = [[1, 0], [0.4375, 0.5625]].
    np.testing.assert_allclose(explain.rollout([a]), [[[1.0, 0.0], [0.25, 0.75]]])
    np.testing.assert_allclose(explain.rollout([a, a]), [[[1.0, 0.0], [0.4375, 0.5625]]])
    # Without the residual term: the plain product A·A.
    np.testing.assert_allclose(
        explain.rollout([a, a], residual_weight=0.0), [[[1.0, 0.0], [0.75, 0.25]]]
    )


def test_rollout_head_fusion_hand_checked():
    heads = np.array([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
    # max: [[1, 1], [1, 1]] -> +I/2 renormalised: rows [0.75, 0.25] / [0.25, 0.75] after the
    # mix (0.5·1 + 0.5, 0.5·1) = (1, 0.5) / 1.5.
    np.testing.assert_allclose(
        explain.rollout([heads], head_fusion="max"), [[[2 / 3, 1 / 3], [1 / 3, 2 / 3]]]
    )
    # min: zeros -> the identity; mean: 0.5 everywhere -> rows (0.75, 0.25).
    np.testing.assert_allclose(explain.rollout([heads], head_fusion="min"), [np.eye(2)])
    np.testing.assert_allclose(
        explain.rollout([heads], head_fusion="mean"), [[[0.75, 0.25], [0.25, 0.75]]]
    )


@pytest.mark.parametrize("head_fusion", explain.HEAD_FUSIONS)
@pytest.mark.parametrize("residual_weight", [0.0, 0.5, 0.9])
def test_rollout_equals_float64_reference(head_fusion, residual_weight, rng):
    maps = _random_maps(rng)
    got = explain.rollout(
        {f"l{i}": m for i, m in enumerate(maps)},
        head_fusion=head_fusion,
        residual_weight=residual_weight,
    )
    want = reference_rollout(maps, head_fusion, residual_weight)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(got))


def test_rollout_of_attention_maps_output_selects_layers_in_order(rng):
    maps = _random_maps(rng)
    named = {"b": maps[1], "a": maps[0], "c": maps[2]}
    np.testing.assert_allclose(
        explain.rollout(named, layers=["a", "b"]), reference_rollout(maps[:2]), atol=1e-12
    )
    three = explain.rollout(named)  # dict order: b, a, c
    np.testing.assert_allclose(three, reference_rollout([maps[1], maps[0], maps[2]]), atol=1e-12)
    one_head = explain.rollout([m[:, 0] for m in maps])  # (B, T, T) layers
    np.testing.assert_allclose(one_head, reference_rollout([m[:, :1] for m in maps]), atol=1e-12)


# -- flow -------------------------------------------------------------------------------


def test_reference_max_flow_hand_checked():
    # s=0 -> 1 (3), s -> 2 (2), 1 -> 2 (1), 1 -> t=3 (2), 2 -> t (3): max flow 5.
    cap = np.zeros((4, 4))
    cap[0, 1], cap[0, 2], cap[1, 2], cap[1, 3], cap[2, 3] = 3, 2, 1, 2, 3
    assert reference_max_flow(cap, 0, 3) == pytest.approx(5.0)
    assert reference_max_flow(cap, 3, 0) == 0.0


def test_flow_hand_checked():
    a1 = np.array([[[0.6, 0.4], [0.2, 0.8]]])
    a2 = np.array([[[0.5, 0.5], [0.0, 1.0]]])
    aug1 = explain.residual_attention(a1)  # [[0.8, 0.2], [0.1, 0.9]]
    np.testing.assert_allclose(explain.residual_attention(a2), [[[0.75, 0.25], [0.0, 1.0]]])
    np.testing.assert_allclose(aug1, [[[0.8, 0.2], [0.1, 0.9]]])
    # One layer: the only path is the edge itself.
    np.testing.assert_allclose(explain.flow([a1]), aug1, atol=1e-12)
    # Two layers: disjoint paths i -> k -> j, so flow = Σ_k min(Ã2[i, k], Ã1[k, j]).
    want = np.array(
        [
            [[min(0.75, 0.8) + min(0.25, 0.1), min(0.75, 0.2) + min(0.25, 0.9)]],
            [[min(0.0, 0.8) + min(1.0, 0.1), min(0.0, 0.2) + min(1.0, 0.9)]],
        ]
    ).reshape(1, 2, 2)
    np.testing.assert_allclose(explain.flow([a1, a2]), want, atol=1e-12)
    # Flow never exceeds what a token sends, and bounds rollout's mass from above per path.
    assert np.all(explain.flow([a1, a2]) <= 1.0 + 1e-12)


@pytest.mark.parametrize("head_fusion", explain.HEAD_FUSIONS)
def test_flow_equals_edmonds_karp_reference(head_fusion, rng):
    maps = _random_maps(rng, layers=3, t=4)
    got = explain.flow(maps, head_fusion=head_fusion)
    want = reference_flow(maps, head_fusion=head_fusion)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.all(np.isfinite(got)) and np.all(got >= 0)


def test_flow_equals_networkx_where_installed(rng):
    nx = pytest.importorskip("networkx", reason="networkx is not installed")
    maps = _random_maps(rng, layers=2, t=3, masked_row=False)
    got = explain.flow(maps)
    aug = [explain.residual_attention(explain.fuse_heads(m)) for m in maps]
    for b in range(B):
        graph = nx.DiGraph()
        for layer, a in enumerate(aug, start=1):
            for i in range(3):
                for j in range(3):
                    graph.add_edge((layer, i), (layer - 1, j), capacity=a[b, i, j])
        for i in range(3):
            for j in range(3):
                want = nx.maximum_flow_value(graph, (2, i), (0, j))
                assert got[b, i, j] == pytest.approx(want, abs=1e-10)


# -- gradient rollout (pure) ------------------------------------------------------------


def test_gradient_rollout_hand_checked():
    a = np.array([[[[0.5, 0.5], [0.0, 1.0]]]])  # (1, 1, 2, 2)
    g = np.array([[[[2.0, -1.0], [3.0, 1.0]]]])
    # (∇A ⊙ A)⁺ = [[1, 0], [0, 1]]; R = I + Ā·I = 2·I.
    np.testing.assert_allclose(explain.gradient_rollout([a], [g]), [2 * np.eye(2)])


def test_gradient_rollout_equals_float64_reference(rng):
    weights = _random_maps(rng)
    grads = [rng.normal(size=w.shape) for w in weights]
    got = explain.gradient_rollout(weights, grads)
    np.testing.assert_allclose(got, reference_gradient_rollout(weights, grads), atol=1e-12)


# -- over a model ---------------------------------------------------------------------------


def _classifier(source, seed=0):
    cls = keras.layers.MultiHeadAttention if source == "keras" else MultiHeadAttention
    x_in = keras.Input((T, D))
    mha = cls(H, 4, name="mha", kernel_initializer=keras.initializers.GlorotUniform(seed))
    y = keras.layers.Activation("tanh")(mha(x_in, x_in))
    y = keras.layers.GlobalAveragePooling1D()(y)
    dense = keras.layers.Dense(C, name="head")
    model = keras.Model(x_in, dense(y))
    rng = np.random.default_rng(seed)
    for v in mha.weights:  # non-zero biases too
        v.assign(rng.normal(size=v.shape, scale=0.5).astype("float32"))
    names = ["query", "key", "value", "attention_output"]
    mha_w = {
        f"{n}/{p}": w
        for n, (k, b) in zip(names, _pairs(mha.get_weights()), strict=True)
        for p, w in (("kernel", k), ("bias", b))
    }
    x = rng.normal(size=(B, T, D)).astype("float32")
    kernel, bias = dense.get_weights()
    return model, x, mha_w, kernel, bias


def _pairs(weights):
    return list(zip(weights[::2], weights[1::2], strict=True))


@pytest.mark.parametrize("source", ["keras", "attnkit"])
def test_attention_gradients_equal_the_chain_rule(source):
    model, x, mha_w, kernel, bias = _classifier(source)
    logits, _, _ = reference_classifier(x, mha_w, kernel, bias)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), logits, rtol=1e-4, atol=1e-5)
    target = np.array([2, 0])
    got = explain.attention_gradients(model, x, target=target)
    assert list(got) == ["mha"]
    weights, grads = got["mha"]
    want_w, want_g = reference_classifier_gradient(x, mha_w, kernel, bias, target)
    np.testing.assert_allclose(weights, want_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads, want_g, rtol=1e-4, atol=1e-6)
    # The default target is each example's argmax class.
    default = explain.attention_gradients(model, x)["mha"][1]
    _, want_default = reference_classifier_gradient(x, mha_w, kernel, bias, logits.argmax(-1))
    np.testing.assert_allclose(default, want_default, rtol=1e-4, atol=1e-6)
    relevance = explain.gradient_weighted_attention(model, x, target=target)
    np.testing.assert_allclose(
        relevance, reference_gradient_rollout([want_w], [want_g]), rtol=1e-4, atol=1e-6
    )
    assert type(model.get_layer("mha")).__module__ != "attnkit.explain"  # class restored


def test_attention_gradients_of_a_keras_attention_layer(rng):
    x_in = keras.Input((T, D))
    att = keras.layers.Attention(name="dot")
    y = keras.layers.GlobalAveragePooling1D()(keras.layers.Activation("tanh")(att([x_in, x_in])))
    dense = keras.layers.Dense(C)
    model = keras.Model(x_in, dense(y))
    x = rng.normal(size=(B, T, D)).astype("float32")
    weights, grads = explain.attention_gradients(model, x, target=1)["dot"]
    # out = A x; y = mean_i tanh(out_i) · W[:, 1]:
    # dy/dA[b, i, j] = Σ_e (1 − h²)[b, i, e] W[e, 1] x[b, j, e] / T.
    x64 = x.astype(np.float64)
    a = np.exp(np.einsum("bid,bjd->bij", x64, x64))
    a /= a.sum(-1, keepdims=True)
    h = np.tanh(a @ x64)
    kernel = dense.get_weights()[0].astype(np.float64)
    want = np.einsum("bie,bje->bij", (1 - h**2) * kernel[:, 1] / T, x64)
    np.testing.assert_allclose(weights, a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads, want, rtol=1e-4, atol=1e-6)


def _cross_entropy(logits, labels):
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]


@pytest.mark.parametrize("source", ["keras", "attnkit"])
def test_head_importance_by_masking_equals_float64_reference(source):
    model, x, mha_w, kernel, bias = _classifier(source, seed=1)
    labels = np.array([1, 2])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    got = explain.head_importance(model, x, labels, loss)
    base = _cross_entropy(reference_classifier(x, mha_w, kernel, bias)[0], labels).mean()
    want = []
    for h in range(H):
        gates = np.ones(H)
        gates[h] = 0.0
        logits = reference_classifier(x, mha_w, kernel, bias, gates=gates)[0]
        want.append(_cross_entropy(logits, labels).mean() - base)
    assert list(got) == ["mha"]
    np.testing.assert_allclose(got["mha"], want, rtol=1e-3, atol=1e-5)
    assert np.all(np.abs(want) > 1e-3)  # zeroing a head changes the loss

    # The gradient proxy: mean over examples of |dL(x)/dξ_h|, here by central
    # differences on the float64 reference, example by example.
    grad = explain.head_importance(model, x, labels, loss, method="gradient")["mha"]
    eps, want_grad = 1e-6, np.zeros(H)
    for h in range(H):
        for b in range(B):
            up, down = np.ones(H), np.ones(H)
            up[h], down[h] = 1 + eps, 1 - eps
            lu = _cross_entropy(
                reference_classifier(x[b : b + 1], mha_w, kernel, bias, up)[0], labels[b : b + 1]
            )
            ld = _cross_entropy(
                reference_classifier(x[b : b + 1], mha_w, kernel, bias, down)[0], labels[b : b + 1]
            )
            want_grad[h] += abs((lu - ld)[0] / (2 * eps)) / B
    np.testing.assert_allclose(grad, want_grad, rtol=1e-3, atol=1e-6)


# -- errors ---------------------------------------------------------------------------------


def test_errors_of_the_pure_functions(rng):
    maps = _random_maps(rng, layers=1)
    with pytest.raises(ValueError, match=r"`head_fusion` must be .*Received: head_fusion='sum'"):
        explain.rollout(maps, head_fusion="sum")
    with pytest.raises(ValueError, match=r"`residual_weight` must be in \[0, 1\].*=1.5"):
        explain.rollout(maps, residual_weight=1.5)
    with pytest.raises(
        ValueError, match=r"self-attention .*Received: maps\['x'\].shape=\(2, 5, 3\)"
    ):
        explain.flow({"x": np.ones((2, 5, 3))})
    with pytest.raises(ValueError, match=r"same batch and tokens .*Received: maps\[1\]"):
        explain.rollout([maps[0], np.ones((2, 1, 4, 4)) / 4])
    with pytest.raises(ValueError, match=r"`layers` must name entries .*Received: layers=\['z'\]"):
        explain.rollout({"a": maps[0]}, layers=["z"])
    with pytest.raises(ValueError, match=r"at least one layer.*Received: maps=\[\]"):
        explain.rollout([])
    with pytest.raises(ValueError, match=r"same layers as `weights`.*Received"):
        explain.gradient_rollout({"a": maps[0]}, {"b": maps[0]})
    with pytest.raises(ValueError, match=r"shapes of `weights`.*Received"):
        explain.gradient_rollout(maps, [maps[0][:, :1]])


def test_errors_of_the_model_functions():
    model, x, *_ = _classifier("attnkit")
    with pytest.raises(ValueError, match=r"`target` must be a class index in \[0, 3\).*=7"):
        explain.attention_gradients(model, x, target=7)
    with pytest.raises(ValueError, match=r"`method` must be .*Received: method='exact'"):
        explain.head_importance(model, x, np.array([0, 1]), "mse", method="exact")
    plain_in = keras.Input((3,))
    plain = keras.Model(plain_in, keras.layers.Dense(2)(plain_in), name="plain")
    with pytest.raises(ValueError, match=r"softmax hook.*Received: model='plain'"):
        explain.attention_gradients(plain, np.ones((2, 3), "float32"))


def test_attention_gradients_of_a_subclassed_model():
    """The gradient methods run the model eagerly: a subclassed model works too."""
    model, x, mha_w, kernel, bias = _classifier("attnkit", seed=2)

    class Net(keras.Model):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def call(self, inputs):
            return self.inner(inputs)

    net = Net(model)
    got = explain.attention_gradients(net, x, target=0)
    want_w, want_g = reference_classifier_gradient(x, mha_w, kernel, bias, 0)
    np.testing.assert_allclose(got["mha"][0], want_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["mha"][1], want_g, rtol=1e-4, atol=1e-6)
