"""attnkit.ops.attention against the float64 NumPy reference."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from attnkit.ops import attention, attention_weights
from attnkit.testing.reference import reference_attention

B, TQ, TV, H, HKV, D = 2, 11, 11, 4, 2, 8
LAYOUTS = ("3d", "4d", "gqa")
LENGTHS = ("same", "different")
MASKINGS = ("none", "padding", "causal", "window", "causal_window", "bias")
IMPLS = ("naive", "chunked")


def make_inputs(layout, lengths, rng, dv=None):
    tq = TQ
    tv = TV if lengths == "same" else 19
    dv = D if dv is None else dv
    if layout == "3d":
        shapes = (B, tq, D), (B, tv, D), (B, tv, dv)
    else:
        hkv = H if layout == "4d" else HKV
        shapes = (B, tq, H, D), (B, tv, hkv, D), (B, tv, hkv, dv)
    return [rng.normal(size=s).astype("float32") for s in shapes]


def masking_kwargs(masking, q, k, rng):
    tq, tv = q.shape[1], k.shape[1]
    if masking == "padding":
        lengths = np.array([tv, tv - 5])
        return {"mask": (np.arange(tv)[None, :] < lengths[:, None])[:, None, :]}
    if masking == "causal":
        return {"causal": True}
    if masking == "window":
        return {"window": 3}
    if masking == "causal_window":
        return {"causal": True, "window": 4}
    if masking == "bias":
        shape = (B, tq, tv) if q.ndim == 3 else (B, q.shape[2], tq, tv)
        return {"bias": rng.normal(size=shape).astype("float32")}
    return {}


def block_size(impl):
    # Small blocks so chunked crosses several query and key blocks.
    return (4, 5) if impl == "chunked" else None


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_float64_reference(layout, lengths, masking, impl, rng):
    q, k, v = make_inputs(layout, lengths, rng)
    kwargs = masking_kwargs(masking, q, k, rng)
    expected, _ = reference_attention(q, k, v, **kwargs)
    out = attention(q, k, v, implementation=impl, block_size=block_size(impl), **kwargs)
    assert tuple(out.shape) == expected.shape
    got = to_numpy(out).astype("float64")
    rel = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
    assert rel < 1e-5, rel


@pytest.mark.parametrize("masking", ("none", "padding", "causal", "bias"))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_matches_reference(layout, masking, rng):
    q, k, v = make_inputs(layout, "same", rng)
    kwargs = masking_kwargs(masking, q, k, rng)
    expected, _ = reference_attention(q, k, v, **kwargs)
    got = to_numpy(attention(q, k, v, implementation="fused", **kwargs))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("score", ("dot", "scaled_dot", "cosine"))
@pytest.mark.parametrize("impl", IMPLS)
def test_scores_and_weights_match_reference(score, impl, rng):
    q, k, v = make_inputs("gqa", "different", rng)
    expected, expected_w = reference_attention(q, k, v, score=score, causal=True, scale=None)
    out = attention(
        q, k, v, score=score, causal=True, implementation=impl, block_size=block_size(impl)
    )
    np.testing.assert_allclose(to_numpy(out), expected, rtol=0, atol=1e-5)
    w = attention_weights(q, k, score=score, causal=True)
    assert tuple(w.shape) == (B, H, TQ, 19)
    np.testing.assert_allclose(to_numpy(w), expected_w, rtol=0, atol=1e-6)


def test_return_weights_layouts(rng):
    q, k, v = make_inputs("3d", "different", rng, dv=5)
    out, w = attention(q, k, v, return_weights=True)
    assert tuple(out.shape) == (B, TQ, 5)
    assert tuple(w.shape) == (B, TQ, 19)
    np.testing.assert_allclose(to_numpy(w).sum(-1), 1.0, atol=1e-6)


def test_explicit_scale_replaces_default(rng):
    q, k, v = make_inputs("4d", "same", rng)
    expected, _ = reference_attention(q, k, v, score="dot", scale=0.3)
    for impl in ("naive", "chunked", "fused"):
        got = attention(q, k, v, score="scaled_dot", scale=0.3, implementation=impl)
        np.testing.assert_allclose(to_numpy(got), expected, atol=1e-5, err_msg=impl)


@pytest.mark.parametrize("impl", ("naive", "chunked", "fused"))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fully_masked_rows_are_zero_not_nan(layout, impl, rng):
    q, k, v = make_inputs(layout, "different", rng)
    mask = np.ones((B, TQ, 19), dtype=bool)
    mask[0, 3] = False  # one query row sees nothing
    mask[1] = False  # a whole batch entry sees nothing
    out = to_numpy(attention(q, k, v, mask=mask, implementation=impl, block_size=block_size(impl)))
    assert np.all(np.isfinite(out))
    assert np.all(out[0, 3] == 0)
    assert np.all(out[1] == 0)
    expected, _ = reference_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    w = to_numpy(attention_weights(q, k, mask=mask))
    assert np.all(np.isfinite(w))
    w0 = w[0, 3] if layout == "3d" else w[0, :, 3]
    assert np.all(w0 == 0)


def test_window_with_causal_beyond_sequence_start(rng):
    # A window that reaches before position 0 must not wrap around.
    q, k, v = make_inputs("3d", "same", rng)
    expected, w = reference_attention(q, k, v, causal=True, window=2)
    assert np.count_nonzero(w[0, 0]) == 1
    got = attention(q, k, v, causal=True, window=2, implementation="chunked", block_size=(3, 3))
    np.testing.assert_allclose(to_numpy(got), expected, atol=1e-5)


def test_bottom_right_causal_lets_last_query_see_whole_cache(rng):
    q = rng.normal(size=(1, 1, 4, 8)).astype("float32")
    k = rng.normal(size=(1, 9, 4, 8)).astype("float32")
    w = to_numpy(attention_weights(q, k, causal=True))
    assert np.all(w[0, :, 0] > 0)
    w_top = to_numpy(attention_weights(q, k, causal=True, alignment="top_left"))
    assert np.count_nonzero(w_top[0, :, 0]) == 4  # one key per head


def test_alignment_string_as_causal_is_deprecated_but_works(rng):
    q = rng.normal(size=(1, 3, 8)).astype("float32")
    k = rng.normal(size=(1, 5, 8)).astype("float32")
    with pytest.warns(DeprecationWarning, match="alignment='top_left'"):
        old = to_numpy(attention_weights(q, k, causal="top_left"))
    new = to_numpy(attention_weights(q, k, causal=True, alignment="top_left"))
    np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(old[0] > 0, np.tril(np.ones((3, 5), bool)))


def test_window_alone_follows_the_alignment(rng):
    q = rng.normal(size=(1, 2, 8)).astype("float32")
    k = rng.normal(size=(1, 6, 8)).astype("float32")
    for alignment, first in (("top_left", 0), ("bottom_right", 4)):
        w = to_numpy(attention_weights(q, k, window=2, alignment=alignment))[0]
        expected = np.abs(np.arange(6)[None, :] - (np.arange(2)[:, None] + first)) < 2
        np.testing.assert_array_equal(w > 0, expected, err_msg=alignment)


def _grad_of(impl, q, k, v, kwargs, bs=None):
    """Gradients of sum(attention(...) * g) wrt q, k, v on the current backend."""
    backend = keras.backend.backend()
    g = (
        np.linspace(-1, 1, num=int(np.prod(q.shape[:-1])) * v.shape[-1])
        .reshape(q.shape[:-1] + (v.shape[-1],))
        .astype("float32")
    )

    def loss(q, k, v):
        out = attention(q, k, v, implementation=impl, block_size=bs, **kwargs)
        return keras.ops.sum(keras.ops.multiply(out, keras.ops.convert_to_tensor(g)))

    if backend == "jax":
        import jax

        return [np.asarray(t) for t in jax.grad(loss, argnums=(0, 1, 2))(q, k, v)]
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(t) for t in (q, k, v)]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = loss(*tensors)
        return [t.numpy() for t in tape.gradient(value, tensors)]
    import torch

    tensors = [torch.tensor(t, requires_grad=True) for t in (q, k, v)]
    loss(*tensors).backward()
    return [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("masking", ("none", "padding", "causal_window"))
@pytest.mark.parametrize("layout", ("3d", "gqa"))
def test_chunked_gradients_equal_naive(layout, masking, rng):
    q, k, v = make_inputs(layout, "different", rng)
    kwargs = masking_kwargs(masking, q, k, rng)
    naive = _grad_of("naive", q, k, v, kwargs)
    chunked = _grad_of("chunked", q, k, v, kwargs, bs=(4, 5))
    for name, a, b in zip("qkv", naive, chunked, strict=True):
        assert np.all(np.isfinite(b)), name
        np.testing.assert_allclose(b, a, atol=1e-5, err_msg=f"d{name}")


def test_gradients_finite_with_fully_masked_rows(rng):
    q, k, v = make_inputs("4d", "same", rng)
    mask = np.ones((B, TQ, TV), dtype=bool)
    mask[0, :4] = False
    for impl in ("naive", "chunked"):
        grads = _grad_of(impl, q, k, v, {"mask": mask}, bs=(4, 5) if impl == "chunked" else None)
        for g in grads:
            assert np.all(np.isfinite(g)), impl
        assert np.all(grads[0][0, :4] == 0), impl  # no signal reaches masked-out queries


def test_dropout_is_seeded_and_only_in_training(rng):
    q, k, v = make_inputs("4d", "same", rng)
    eval_out = to_numpy(attention(q, k, v, dropout=0.5, training=False))
    plain = to_numpy(attention(q, k, v))
    np.testing.assert_allclose(eval_out, plain, atol=1e-6)
    a = to_numpy(attention(q, k, v, dropout=0.5, training=True, seed=7))
    b = to_numpy(attention(q, k, v, dropout=0.5, training=True, seed=7))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain, atol=1e-3)


def test_auto_picks_a_path_that_serves_the_request(rng):
    q, k, v = make_inputs("4d", "same", rng)
    out, w = attention(q, k, v, return_weights=True, implementation="auto")
    assert tuple(w.shape) == (B, H, TQ, TV)
    expected, expected_w = reference_attention(q, k, v)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(w), expected_w, atol=1e-6)


@pytest.mark.parametrize("policy_dtype", ("float16", "bfloat16"))
def test_low_precision_inputs_stay_finite(policy_dtype, rng):
    q, k, v = make_inputs("4d", "same", rng)
    q = q * 300  # large logits
    mask = np.ones((B, TQ, TV), dtype=bool)
    mask[0, 0] = False
    cast = [keras.ops.cast(t, policy_dtype) for t in (q, k, v)]
    for impl in ("naive", "chunked"):
        out = attention(*cast, mask=mask, implementation=impl, block_size=block_size(impl))
        assert keras.backend.standardize_dtype(out.dtype) == policy_dtype
        out = to_numpy(keras.ops.cast(out, "float32"))
        assert np.all(np.isfinite(out)), impl
        assert np.all(out[0, 0] == 0), impl


def test_large_logits_stay_finite(rng):
    q, k, v = make_inputs("3d", "same", rng)
    bias = np.full((B, TQ, TV), 1e4, dtype="float32")
    bias[:, :, 0] = -1e4
    for impl in IMPLS:
        out = to_numpy(
            attention(q * 1e3, k, v, bias=bias, implementation=impl, block_size=block_size(impl))
        )
        assert np.all(np.isfinite(out)), impl


@pytest.mark.parametrize("dv", (3, 12))
@pytest.mark.parametrize("impl", ("naive", "chunked", "fused"))
def test_value_head_size_may_differ_from_key(dv, impl, rng):
    q, k, v = make_inputs("gqa", "different", rng, dv=dv)
    expected, _ = reference_attention(q, k, v, causal=True)
    got = to_numpy(
        attention(q, k, v, causal=True, implementation=impl, block_size=block_size(impl))
    )
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_cosine_score_in_float16_does_not_underflow():
    """|q|² of a small float16 vector underflows to 0; cosine is scale-free."""
    rng = np.random.default_rng(0)
    u = rng.normal(size=(2, 3, 4))
    k = rng.normal(size=(2, 5, 4))
    v = rng.normal(size=(2, 5, 4))
    half = [keras.ops.cast(x, "float16") for x in (u, k, v)]
    small = keras.ops.cast(1e-4 * u, "float16")  # squares ~1e-8: below float16's range
    for impl in ("naive", "chunked"):
        expected = keras.ops.convert_to_numpy(attention(*half, score="cosine", implementation=impl))
        out = keras.ops.convert_to_numpy(
            attention(small, *half[1:], score="cosine", implementation=impl)
        )
        assert np.all(np.isfinite(out)), impl
        np.testing.assert_allclose(out.astype("float32"), expected.astype("float32"), atol=4e-3)
