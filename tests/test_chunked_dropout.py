"""Attention dropout on the chunked path (issue 17).

The keep-mask of every weight is a pure function of a per-call key and the
weight's global (batch, head, query, key) indices (``ops.counter_noise``), so
the chunked forward and its recomputing backward regenerate it block by block,
and the naive path draws the same one. Everything here is checked against a
float64 NumPy reference whose keep-mask is an independent NumPy implementation
of the same hash (unsigned 64-bit arithmetic, no keras).
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from keras import ops

from attnkit.ops import attention, counter_noise, dispatch
from attnkit.ops.attention import prepare

BACKEND = keras.backend.backend()
B, TQ, TV, H, HKV, D = 2, 13, 11, 4, 2, 8
RATE = 0.3

# NumPy reference of the keep-mask ------------------------------------------------

_M32 = 0xFFFFFFFF


def _np_mix(x):
    x = np.asarray(x, np.uint64) & _M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & _M32
    return x ^ (x >> np.uint64(16))


def _np_times(x, c):
    return (np.asarray(x, np.uint64) * np.uint64(c)) & _M32


def np_key(seed):
    s0 = seed & 0x7FFFFFFF
    s1 = ((seed >> 31) & 0x7FFFFFFF) ^ 0x5BD1E995
    return _np_mix(_np_mix(s0) ^ np.uint64(s1))


def np_keep(seed, rate, batch, heads, tq, tv):
    """Bool (B, H, Tq, Tv): which weights the dropout of ``seed`` keeps."""
    b = np.arange(batch)[:, None, None, None]
    h = np.arange(heads)[None, :, None, None]
    q = np.arange(tq)[None, None, :, None]
    k = np.arange(tv)[None, None, None, :]
    x = _np_mix(np_key(seed) ^ _np_times(b, 0x2545F491))
    x = _np_mix(x ^ _np_times(h, 0x1B873593))
    x = _np_mix(x ^ _np_times(q, 0x68E31DA4))
    bits = _np_mix(x ^ _np_times(k, 0x9E3779B1))
    return (bits >> np.uint64(8)) >= np.uint64(round(rate * (1 << 24)))


# The mask of seed 1234, rate 0.5, B=1, H=2, Tq=2, Tv=8 (rows of bits, key 0
# first), written down once from ``np_keep``: a change of the hash shows here.
STORED_KEEP = ["01000100", "10101101", "10111100", "11101011"]


# NumPy reference of attention with dropout -------------------------------------


def _mod_bias(q_idx, kv_idx):
    return 0.05 * (q_idx - kv_idx)


def np_attention(
    q,
    k,
    v,
    d_out,
    *,
    keep,
    rate,
    mask=None,
    causal=False,
    window=None,
    bias=None,
    mods=False,
    sinks=None,
):
    """Float64 output (B, Tq, H, Dv) and gradients wrt q, k, v of sum(out * d_out)."""
    q, k, v, d_out = (np.asarray(x, np.float64) for x in (q, k, v, d_out))
    heads, groups = q.shape[2], q.shape[2] // k.shape[2]
    tq, tv = q.shape[1], k.shape[1]
    scale = 1 / np.sqrt(q.shape[-1])
    qh = q.transpose(0, 2, 1, 3)  # (B, H, Tq, D)
    kh = np.repeat(k, groups, axis=2).transpose(0, 2, 1, 3)  # (B, H, Tv, D)
    vh = np.repeat(v, groups, axis=2).transpose(0, 2, 1, 3)
    s = qh @ kh.transpose(0, 1, 3, 2) * scale  # (B, H, Tq, Tv)
    q_idx = np.arange(tq)[:, None] + (tv - tq)  # bottom-right, in key coordinates
    kv_idx = np.arange(tv)[None, :]
    allowed = np.ones(s.shape, bool)
    if bias is not None:
        s = s + bias
    if mask is not None:
        allowed &= mask
    if causal:
        allowed &= kv_idx <= q_idx
    if window is not None:
        allowed &= np.abs(q_idx - kv_idx) < window
    if mods:
        s = s + _mod_bias(q_idx, kv_idx)
        allowed &= (q_idx + kv_idx) % 3 != 0
    masked = np.where(allowed, s, -np.inf)
    m = masked.max(axis=-1, keepdims=True)
    if sinks is not None:
        m = np.maximum(m, np.asarray(sinks, np.float64)[None, :, None, None])
    m = np.where(np.isfinite(m), m, 0)
    e = np.where(allowed, np.exp(s - m), 0)
    denom = e.sum(-1, keepdims=True)
    if sinks is not None:
        denom = denom + np.exp(np.asarray(sinks, np.float64)[None, :, None, None] - m)
    p = e / np.where(denom > 0, denom, 1)
    z = keep / (1 - rate)
    do = d_out.transpose(0, 2, 1, 3)  # (B, H, Tq, Dv)
    out = (p * z) @ vh
    dp = (do @ vh.transpose(0, 1, 3, 2)) * z
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    dq = ds @ kh * scale
    dk = ds.transpose(0, 1, 3, 2) @ qh * scale  # (B, H, Tv, D)
    dv = (p * z).transpose(0, 1, 3, 2) @ do

    def to_kv(x):  # (B, H, Tv, X) -> (B, Tv, Hkv, X), summed over the group
        b, _, t, f = x.shape
        return x.reshape(b, heads // groups, groups, t, f).sum(2).transpose(0, 2, 1, 3)

    return out.transpose(0, 2, 1, 3), [dq.transpose(0, 2, 1, 3), to_kv(dk), to_kv(dv)]


# Helpers ---------------------------------------------------------------------------


def _inputs(seed=0, tq=TQ, tv=TV):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, tq, H, D)).astype("float32")
    k = rng.normal(size=(B, tv, HKV, D)).astype("float32")
    v = rng.normal(size=(B, tv, HKV, D)).astype("float32")
    d_out = rng.normal(size=(B, tq, H, D)).astype("float32")
    return q, k, v, d_out


def _mod(score, b, h, q_idx, kv_idx):
    return score + 0.05 * ops.cast(q_idx - kv_idx, score.dtype)


def _mask_mod(b, h, q_idx, kv_idx):
    return ops.not_equal(ops.mod(q_idx + kv_idx, 3), 0)


def _config(name, rng):
    """(attention kwargs, reference kwargs) of a named combination."""
    mask = rng.random((B, 1, TQ, TV)) > 0.3
    mask[0, 0, 2] = False  # a query row with nothing to attend to
    bias = rng.normal(size=(B, 1, TQ, TV)).astype("float32")
    sinks = np.linspace(-1, 1, H).astype("float32")
    options = {
        "plain": ({}, {}),
        "mask": ({"mask": mask}, {"mask": mask}),
        "causal": ({"causal": True}, {"causal": True}),
        "causal_window": ({"causal": True, "window": 4}, {"causal": True, "window": 4}),
        "mods": ({"score_mod": _mod, "mask_mod": _mask_mod}, {"mods": True}),
        "sinks": ({"sinks": sinks}, {"sinks": sinks}),
        "bias": ({"bias": bias}, {"bias": bias}),  # autodiff through the blocked forward
        "all": (
            {
                "mask": mask,
                "causal": True,
                "window": 6,
                "score_mod": _mod,
                "mask_mod": _mask_mod,
                "sinks": sinks,
            },
            {"mask": mask, "causal": True, "window": 6, "mods": True, "sinks": sinks},
        ),
    }
    return options[name]


def _forward_and_grads(q, k, v, d_out, kwargs):
    """Output and gradients wrt q, k, v of sum(attention(...) * d_out)."""

    def loss(q, k, v):
        out = attention(q, k, v, **kwargs)
        return ops.sum(out * ops.convert_to_tensor(d_out)), out

    if BACKEND == "jax":
        import jax

        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return np.asarray(out), [np.asarray(g) for g in grads]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(t) for t in (q, k, v)]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value, out = loss(*tensors)
        return out.numpy(), [g.numpy() for g in tape.gradient(value, tensors)]
    import torch

    tensors = [torch.tensor(t, requires_grad=True) for t in (q, k, v)]
    value, out = loss(*tensors)
    value.backward()
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


# Tests -------------------------------------------------------------------------------


def test_the_keep_mask_is_the_numpy_hash_and_the_stored_bits():
    stored = np.array([[c == "1" for c in row] for row in STORED_KEEP]).reshape(1, 2, 2, 8)
    np.testing.assert_array_equal(np_keep(1234, 0.5, 1, 2, 2, 8), stored)
    for shape in ((1, 2, 1, 2, 8), (B, H, HKV, TQ, TV)):
        batch, heads, kv_heads, tq, tv = shape
        seed = 1234 if shape[0] == 1 else 99
        rate = 0.5 if shape[0] == 1 else RATE
        key = counter_noise.dropout_key(seed)
        rows = counter_noise.dropout_rows(key, batch, heads, kv_heads, 0, tq)
        factor = to_numpy(counter_noise.dropout_factor(rows, rate, 0, tv))  # (B, Hkv, G, Tq, Tv)
        ours = factor.reshape(batch, heads, tq, tv) > 0
        np.testing.assert_array_equal(ours, np_keep(seed, rate, batch, heads, tq, tv))
        np.testing.assert_allclose(factor[factor > 0], 1 / (1 - rate), rtol=1e-6)


@pytest.mark.parametrize("impl", ("chunked", "naive"))
@pytest.mark.parametrize(
    "name", ("plain", "mask", "causal", "causal_window", "mods", "sinks", "bias", "all")
)
def test_dropout_equals_the_float64_reference(name, impl):
    q, k, v, d_out = _inputs()
    kwargs, ref_kwargs = _config(name, np.random.default_rng(1))
    seed = 7
    keep = np_keep(seed, RATE, B, H, TQ, TV)
    expected, expected_grads = np_attention(q, k, v, d_out, keep=keep, rate=RATE, **ref_kwargs)
    call = dict(kwargs, dropout=RATE, training=True, seed=seed, implementation=impl)
    if impl == "chunked":
        call["block_size"] = (4, 4)
    out, grads = _forward_and_grads(q, k, v, d_out, call)
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-5)
    for got, want, what in zip(grads, expected_grads, ("dq", "dk", "dv"), strict=True):
        np.testing.assert_allclose(got, want, atol=5e-5, rtol=1e-4, err_msg=what)
    # The reference is not the no-dropout answer: the mask matters.
    plain, _ = np_attention(q, k, v, d_out, keep=np.ones_like(keep), rate=0.0, **ref_kwargs)
    assert not np.allclose(expected, plain, atol=1e-3)


@pytest.mark.parametrize("kwargs", ({}, {"causal": True, "window": 5}, {"mask_mod": _mask_mod}))
def test_block_sizes_do_not_change_the_result(kwargs):
    q, k, v, d_out = _inputs(2)
    results = []
    for block_size in ((4, 4), (5, 3), (1, 11), (13, 11), (16, 16)):
        call = dict(kwargs, dropout=RATE, training=True, seed=11, block_size=block_size)
        results.append(_forward_and_grads(q, k, v, d_out, dict(call, implementation="chunked")))
    naive = _forward_and_grads(
        q, k, v, d_out, dict(kwargs, dropout=RATE, training=True, seed=11, implementation="naive")
    )
    for out, grads in results:
        np.testing.assert_allclose(out, naive[0], atol=2e-6, rtol=1e-6)
        for got, want in zip(grads, naive[1], strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_the_keep_rate_is_one_minus_the_rate():
    batch, heads, kv_heads, tq, tv = 2, 4, 2, 64, 128  # 65,536 weights
    for rate, seed in ((0.1, 3), (0.3, keras.random.SeedGenerator(4)), (0.75, 5)):
        key = counter_noise.dropout_key(seed)
        rows = counter_noise.dropout_rows(key, batch, heads, kv_heads, 0, tq)
        keep = to_numpy(counter_noise.dropout_factor(rows, rate, 0, tv)) > 0
        keep = keep.reshape(batch, heads, tq, tv)
        n = keep.size
        sigma = np.sqrt(rate * (1 - rate) / n)  # 0.0012 to 0.0018
        assert abs(keep.mean() - (1 - rate)) < 5 * sigma, (rate, keep.mean())
        # Every batch, head, query row and key column is thinned alike (no
        # index left out of the hash): 4,096 to 16,384 draws per slice.
        for axis in range(4):
            slices = keep.mean(axis=tuple(a for a in range(4) if a != axis))
            n_slice = n // keep.shape[axis]
            bound = 6 * np.sqrt(rate * (1 - rate) / n_slice)
            assert np.all(np.abs(slices - (1 - rate)) < bound), (rate, axis, slices)
        # Neighbouring weights are independent: P(both kept) = (1 - rate)².
        for a, b in (
            (keep[..., 1:], keep[..., :-1]),
            (keep[:, :, 1:], keep[:, :, :-1]),
            (keep[:, 1:], keep[:, :-1]),
            (keep[1:], keep[:-1]),
        ):
            both = np.mean(a & b)
            assert abs(both - (1 - rate) ** 2) < 6 * np.sqrt(both * (1 - both) / a.size), rate


@pytest.mark.parametrize("impl", ("chunked", "naive"))
def test_rate_zero_and_inference_are_exactly_no_dropout(impl):
    q, k, v, _ = _inputs(3)
    plain = to_numpy(attention(q, k, v, causal=True, implementation=impl))
    for dropout, training in ((0.0, True), (0.5, False)):
        out = attention(
            q, k, v, causal=True, implementation=impl, dropout=dropout, training=training, seed=1
        )
        np.testing.assert_array_equal(to_numpy(out), plain)


def test_a_seed_reproduces_and_calls_differ():
    q, k, v, _ = _inputs(4)

    def call(seed):
        out = attention(
            q,
            k,
            v,
            dropout=RATE,
            training=True,
            seed=seed,
            implementation="chunked",
            block_size=(4, 4),
        )
        return to_numpy(out)

    np.testing.assert_array_equal(call(5), call(5))
    assert not np.allclose(call(5), call(6), atol=1e-3)
    first, second = keras.random.SeedGenerator(8), keras.random.SeedGenerator(8)
    a1, a2 = call(first), call(first)
    assert not np.allclose(a1, a2, atol=1e-3)  # each call draws a new key
    np.testing.assert_array_equal(call(second), a1)  # the same generator repeats
    np.testing.assert_array_equal(call(second), a2)


def test_an_integer_seed_gives_the_same_output_on_every_backend():
    # The reference's mask comes from NumPy alone, so matching it on each
    # backend is matching across backends; rate 0.5 and 2 heads, the stored bits.
    q, k, v, d_out = _inputs(5, tq=2, tv=8)
    q, d_out = q[:1, :, :2], d_out[:1, :, :2]
    k, v = k[:1, :, :1], v[:1, :, :1]
    stored = np.array([[c == "1" for c in row] for row in STORED_KEEP]).reshape(1, 2, 2, 8)
    expected, _ = np_attention(q, k, v, d_out, keep=stored, rate=0.5)
    for impl in ("chunked", "naive"):
        out = attention(q, k, v, dropout=0.5, training=True, seed=1234, implementation=impl)
        np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)


@pytest.mark.parametrize("rate", (-0.1, 1.0, 1.5))
def test_a_bad_rate_is_an_error_naming_dropout(rate):
    q, k, v, _ = _inputs()
    with pytest.raises(ValueError, match=r"`dropout`.*Received: dropout="):
        attention(q, k, v, dropout=rate, training=True, implementation="chunked")


def test_auto_and_layers_take_the_chunked_path_with_dropout():
    n = 2048  # above every backend's chunked threshold, below no fused limit that matters
    x = np.zeros((1, n, 2, 4), "float32")
    problem = prepare(x, x[:, :, :1], x[:, :, :1])
    assert dispatch.choose(problem, "auto", False, True) == "chunked"
    assert dispatch.choose(problem, "auto", True, True) == "naive"  # weights: only naive
    assert dispatch.choose(problem, "chunked", False, True) == "chunked"
    with pytest.raises(ValueError, match="does not apply dropout"):
        dispatch.choose(problem, "fused", False, True)
    assert dispatch.layer_implementation("auto", False, n, n, False, 0.1) == "chunked"
    assert dispatch.layer_implementation("auto", False, n, n, True, 0.1) == "naive"
    assert dispatch.layer_implementation("auto", False, 8, 8, False, 0.1) == "naive"


def test_multi_head_attention_trains_with_dropout_on_the_chunked_path():
    """The layer takes `implementation="chunked"` with dropout (only fused refuses)."""
    from attnkit.layers import MultiHeadAttention

    x = np.random.default_rng(0).normal(size=(2, 12, 16)).astype("float32")
    chunked = MultiHeadAttention(
        num_heads=4, key_dim=8, dropout=0.3, seed=3, implementation="chunked"
    )
    naive = MultiHeadAttention(num_heads=4, key_dim=8, dropout=0.3, seed=3, implementation="naive")
    chunked(x, x)
    naive(x, x)
    naive.set_weights(chunked.get_weights())
    train = to_numpy(chunked(x, x, training=True))
    assert np.all(np.isfinite(train))
    # The same counter-based mask on both paths for the same seed.
    np.testing.assert_allclose(train, to_numpy(naive(x, x, training=True)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(train, to_numpy(chunked(x, x, training=False)), atol=1e-4)
    with pytest.raises(ValueError, match="fused kernel has no dropout"):
        MultiHeadAttention(num_heads=4, key_dim=8, dropout=0.1, implementation="fused")
