"""Half precision in the layers (issue 16, item 1).

Under ``mixed_float16`` and ``mixed_bfloat16``, inputs that the compute dtype
represents (integers with |x| <= 300, D = 8) give finite outputs and finite
gradients in every layer, although a dot product of two such vectors reaches
720,000 (float16 tops out at 65,504): the layers that materialise their scores
compute them in float32 (``attnkit.ops.scores.at_least_float32``), the others
leave them to the attention core. Zero vectors in the normalising scores
(cosine, Bahdanau's weight-normalised energy) stay finite: both go through
``attnkit.ops.scores.l2_normalize``, the package's only L2 normalisation.
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from attnkit import layers
from attnkit.ops import scores as scores_lib

POLICIES = ("mixed_float16", "mixed_bfloat16")
B, TQ, TV, D = 2, 5, 6, 8


def _big_inputs(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.integers(-300, 301, size=(B, TQ, D)).astype("float32")
    v = rng.integers(-300, 301, size=(B, TV, D)).astype("float32")
    q[:, 0] = 300.0  # the first query and key are aligned: q·k = 720,000
    v[:, 0] = 300.0
    return q, v


def _grads(layer, call, inputs):
    """Gradients of mean(output) w.r.t. the inputs and the trainable weights."""
    backend = keras.backend.backend()
    weights = layer.trainable_variables
    if backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(values, xs):
            def run(*args, **kwargs):
                return layer.stateless_call(values, non_trainable, *args, **kwargs)[0]

            out = call(run, xs)
            out = out[0] if isinstance(out, (tuple, list)) else out
            return keras.ops.mean(keras.ops.cast(out, "float32"))

        g_w, g_x = jax.grad(loss, argnums=(0, 1))([v.value for v in weights], list(inputs))
        return list(g_x) + list(g_w)
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.convert_to_tensor(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            out = call(layer, xs)
            out = out[0] if isinstance(out, (tuple, list)) else out
            loss = tf.reduce_mean(tf.cast(out, "float32"))
        return tape.gradient(loss, xs + [v.value for v in weights])
    import torch

    xs = [torch.tensor(x, requires_grad=True) for x in inputs]
    out = call(layer, xs)
    out = out[0] if isinstance(out, (tuple, list)) else out
    keras.ops.mean(keras.ops.cast(out, "float32")).backward()
    return [x.grad for x in xs] + [v.value.grad for v in weights]


def _list_call(layer, xs, **kwargs):
    return layer(list(xs), **kwargs)


def _qv_call(layer, xs, **kwargs):
    return layer(*xs, **kwargs)


# (layer factory, call). Every layer with a [query, value] or (query, value)
# call, in its score modes; the first entries are the reproductions.
CASES = {
    "LocalAttention-local-m-dot": (
        lambda: layers.LocalAttention(window=2, mode="local-m", score_mode="dot"),
        _list_call,
    ),
    "LocalAttention-local-m-general": (
        lambda: layers.LocalAttention(window=2, mode="local-m", score_mode="general"),
        _list_call,
    ),
    "LocalAttention-local-p-concat": (
        lambda: layers.LocalAttention(window=2, mode="local-p", score_mode="concat"),
        _list_call,
    ),
    "HardAttention-topk": (lambda: layers.HardAttention(method="topk", k=2), _list_call),
    "HardAttention-gumbel-scaled": (
        lambda: layers.HardAttention(score_mode="scaled_dot"),
        _list_call,
    ),
    "LuongAttention-dot": (lambda: layers.LuongAttention(score_mode="dot"), _list_call),
    "LuongAttention-general": (lambda: layers.LuongAttention(score_mode="general"), _list_call),
    "MonotonicAttention-luong": (
        lambda: layers.MonotonicAttention(score="luong", mode="recursive"),
        _list_call,
    ),
    "BahdanauAttention-normalize": (
        lambda: layers.BahdanauAttention(6, normalize=True),
        _list_call,
    ),
    "Attention-dot": (lambda: layers.Attention(), _list_call),
    "Attention-cosine": (lambda: layers.Attention(score_mode="cosine"), _list_call),
    "Attention-general": (lambda: layers.Attention(score_mode="general"), _list_call),
    "AdditiveAttention": (lambda: layers.AdditiveAttention(), _list_call),
    "MultiHeadAttention-causal-grouped": (
        lambda: layers.MultiHeadAttention(num_heads=4, key_dim=8, num_key_value_heads=2),
        lambda layer, xs: _qv_call(layer, [xs[0], xs[0]], use_causal_mask=True),
    ),
    "GroupedQueryAttention-causal": (
        lambda: layers.GroupedQueryAttention(head_dim=8, num_query_heads=4, num_key_value_heads=2),
        lambda layer, xs: _qv_call(layer, [xs[0], xs[0]], use_causal_mask=True),
    ),
}


def _identity_kernels(layer):
    """Sets square kernels to the identity: projections keep |x| <= 300 at full size,
    so the logits really leave the float16 range (glorot weights may shrink them)."""
    for w in layer.trainable_variables:
        shape = tuple(w.shape)
        if len(shape) == 2 and shape[0] == shape[1]:
            w.assign(np.eye(shape[0], dtype="float32"))


# The default suite keeps the reproductions and one case per scoring
# path of the layers in float16 (the dtype that overflows); every case under
# both policies runs with -m slow (the RNN mechanisms loop over the queries,
# slow to trace on JAX; MultiHeadAttention's core path has its own fast tests
# in test_half_precision_ops.py).
FAST = (
    "LocalAttention-local-m-dot",
    "LocalAttention-local-m-general",
    "HardAttention-topk",
    "LuongAttention-general",
    "Attention-cosine",
)
GRID = [
    pytest.param(
        case, policy, marks=() if case in FAST and policy == POLICIES[0] else pytest.mark.slow
    )
    for case in sorted(CASES)
    for policy in POLICIES
]


@pytest.mark.parametrize("case,policy", GRID)
def test_representable_inputs_give_finite_outputs_and_gradients(case, policy):
    keras.config.set_dtype_policy(policy)
    make, call = CASES[case]
    layer = make()
    inputs = _big_inputs()
    call(layer, inputs)  # builds
    _identity_kernels(layer)
    out = call(layer, inputs)
    outs = out if isinstance(out, (tuple, list)) else [out]
    for o in outs:
        assert np.all(np.isfinite(to_numpy(keras.ops.cast(o, "float32")))), case
    for g in _grads(layer, call, inputs):
        if g is not None:
            assert np.all(np.isfinite(to_numpy(keras.ops.cast(g, "float32")))), case


@pytest.mark.parametrize("policy", POLICIES)
def test_local_m_dot_scores_are_float32_logits_of_the_inputs(policy):
    # local-m with dot scores has no weights: the weights equal a float64
    # softmax-times-Gaussian of the exact logits (the inputs are integers).
    keras.config.set_dtype_policy(policy)
    q, v = _big_inputs()
    if policy == "mixed_bfloat16":  # integers up to 300 round once in bfloat16
        q, v = (to_numpy(keras.ops.cast(keras.ops.cast(x, "bfloat16"), "float32")) for x in (q, v))
    layer = layers.LocalAttention(window=2, mode="local-m", score_mode="dot")
    _, weights = layer([q, v], return_attention_scores=True)
    logits = np.einsum("bqd,bkd->bqk", q.astype("float64"), v.astype("float64"))
    p = np.arange(TQ) * (TV - 1) / (TQ - 1)
    distance = np.arange(TV)[None, :] - p[:, None]  # (Tq, Tv)
    inside = np.abs(distance) <= 2
    masked = np.where(inside, logits, -np.inf)
    align = np.exp(masked - masked.max(-1, keepdims=True))
    align /= align.sum(-1, keepdims=True)
    want = align * np.exp(-(distance**2) / (2 * 1.0**2))
    got = to_numpy(keras.ops.cast(weights, "float32"))
    tolerance = 2**-8 if policy == "mixed_bfloat16" else 2**-11  # one rounding to the compute dtype
    np.testing.assert_allclose(got, want, atol=tolerance, rtol=0)


@pytest.mark.parametrize("policy", POLICIES)
def test_cosine_score_of_a_zero_query_is_finite(policy):
    # The reproduction: query row [0, 0, 0, 0] used to give a NaN row.
    keras.config.set_dtype_policy(policy)
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 3, 4)).astype("float32")
    q[0, 0] = 0.0
    v = rng.normal(size=(2, 5, 4)).astype("float32")
    out, weights = layers.Attention(score_mode="cosine")([q, v], return_attention_scores=True)
    out, weights = (to_numpy(keras.ops.cast(t, "float32")) for t in (out, weights))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(weights))
    # A zero query has cosine 0 with every key: uniform weights, the values' mean.
    np.testing.assert_allclose(weights[0, 0], np.full(5, 0.2), atol=2e-3)
    np.testing.assert_allclose(out[0, 0], v[0].mean(0), atol=2e-2)


@pytest.mark.parametrize("policy", POLICIES)
def test_bahdanau_weight_normalisation_of_a_zero_v_is_finite(policy):
    keras.config.set_dtype_policy(policy)
    q, v = (x / 300.0 for x in _big_inputs())
    layer = layers.BahdanauAttention(6, normalize=True)
    layer([q, v])
    layer.attention_v.assign(np.zeros(6, "float32"))
    _, alpha = layer([q, v], return_attention_scores=True)
    alpha = to_numpy(keras.ops.cast(alpha, "float32"))
    # g · v/|v| with v = 0 is 0: every energy is 0, the weights uniform.
    np.testing.assert_allclose(alpha, np.full(alpha.shape, 1 / TV), atol=2e-3)


@pytest.mark.parametrize("dtype", ("float16", "bfloat16", "float32"))
def test_l2_normalize_of_zero_and_tiny_vectors(dtype):
    x = np.array([[0.0, 0.0, 0.0], [1e-4, 0.0, 0.0], [3.0, 4.0, 0.0]], "float32")
    got = to_numpy(scores_lib.l2_normalize(keras.ops.cast(x, dtype)))
    want = np.array([[0, 0, 0], [1, 0, 0], [0.6, 0.8, 0]])
    np.testing.assert_allclose(got, want, atol=1e-2 if dtype == "bfloat16" else 1e-3)


def test_at_least_float32_casts_half_only():
    for dtype, want in (("float16", "float32"), ("bfloat16", "float32"), ("float32", "float32")):
        got = scores_lib.at_least_float32(keras.ops.zeros((2,), dtype))
        assert keras.backend.standardize_dtype(got.dtype) == want
