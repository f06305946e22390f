"""Property-based checks of the attention core (hypothesis).

`make test` runs a small derandomised profile with shapes from a fixed set
(``FIXED_SHAPES``); `make fuzz` runs >= 10 000 examples across the three
backends (HYPOTHESIS_PROFILE=fuzz) with free shapes. The layer-level property
is tests/test_layer_properties.py.
"""

import os

import keras
import numpy as np
import pytest
from conftest import to_numpy

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnkit.ops import attention, attention_weights  # noqa: E402
from attnkit.testing.reference import reference_attention  # noqa: E402
from attnkit.testing.strategies import fuzzing  # noqa: E402

EXAMPLES = {"count": 0}


# The default profile (`make test`) draws shapes from these small fixed sets,
# because JAX compiles every op again for every new shape; `make fuzz` draws
# them freely. (B, Tq, Tv, D, Dv); heads (H, Hkv) of the 4-D and grouped
# layouts; chunked block sizes: one block per axis, and several.
FIXED_SHAPES = ((2, 3, 5, 4, 3), (1, 6, 6, 2, 5))
FIXED_HEADS = {"4d": (2, 2), "gqa": (2, 1)}
FIXED_BLOCKS = ((6, 6), (2, 3))


@st.composite
def problems(draw, scales=(0.5, 1.0, 4.0)):
    layout = draw(st.sampled_from(["3d", "4d", "gqa"]))
    if fuzzing():
        b = draw(st.integers(1, 2))
        tq = draw(st.integers(1, 9))
        tv = draw(st.integers(1, 9))
        d = draw(st.integers(1, 6))
        dv = draw(st.integers(1, 5))
        if layout == "3d":
            h = hkv = None
        else:
            hkv = draw(st.sampled_from([1, 2]))
            h = hkv * (1 if layout == "4d" else draw(st.sampled_from([2, 3])))
        block = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    else:
        b, tq, tv, d, dv = draw(st.sampled_from(FIXED_SHAPES))
        h, hkv = FIXED_HEADS.get(layout, (None, None))
        block = draw(st.sampled_from(FIXED_BLOCKS))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from(scales))

    def tensor(t, heads, dim):
        shape = (b, t, dim) if heads is None else (b, t, heads, dim)
        return (rng.normal(size=shape) * scale).astype("float32")

    q, k, v = tensor(tq, h, d), tensor(tv, hkv, d), tensor(tv, hkv, dv)
    kwargs = {}
    mask_kind = draw(st.sampled_from(["none", "random", "padding", "empty_rows", "empty_batch"]))
    mask_shape = (b, tq, tv) if h is None else (b, h, tq, tv)
    if mask_kind == "random":
        kwargs["mask"] = rng.random(mask_shape) < 0.7
    elif mask_kind == "padding":
        lengths = rng.integers(0, tv + 1, size=b)
        kwargs["mask"] = (np.arange(tv)[None, :] < lengths[:, None])[:, None, :]
    elif mask_kind == "empty_rows":
        m = rng.random(mask_shape) < 0.8
        m[..., rng.integers(0, tq), :] = False
        kwargs["mask"] = m
    elif mask_kind == "empty_batch":
        m = np.ones(mask_shape, dtype=bool)
        m[0] = False
        kwargs["mask"] = m
    if draw(st.booleans()):
        kwargs["causal"] = True
    if draw(st.booleans()):
        kwargs["alignment"] = "top_left"
    window = draw(st.one_of(st.none(), st.integers(1, 5)))
    if window is not None:
        kwargs["window"] = window
    if draw(st.booleans()):
        kwargs["bias"] = rng.normal(size=mask_shape).astype("float32")
    kwargs["score"] = draw(st.sampled_from(["dot", "scaled_dot", "cosine"]))
    return q, k, v, kwargs, block


@given(problems())
def test_core_properties(problem):
    q, k, v, kwargs, block = problem
    EXAMPLES["count"] += 1
    expected, expected_w = reference_attention(q, k, v, **kwargs)
    naive, w = attention(q, k, v, implementation="naive", return_weights=True, **kwargs)
    chunked = attention(q, k, v, implementation="chunked", block_size=block, **kwargs)
    naive, w, chunked = to_numpy(naive), to_numpy(w), to_numpy(chunked)
    for out in (naive, chunked, w):
        assert np.all(np.isfinite(out))
    np.testing.assert_allclose(naive, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(chunked, naive, rtol=1e-4, atol=1e-4)
    if kwargs["score"] != "cosine":  # the backend kernels compute dot-product scores only
        fused = to_numpy(attention(q, k, v, implementation="fused", **kwargs))
        assert np.all(np.isfinite(fused))
        np.testing.assert_allclose(fused, naive, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(w, expected_w, rtol=1e-5, atol=1e-5)
    # Masked keys get exactly zero weight; rows sum to 1 or, with nothing to attend to, 0.
    assert np.all(w[expected_w == 0] == 0) if "mask" in kwargs else True
    sums = w.sum(-1)
    assert np.all(np.isclose(sums, 1.0, atol=1e-5) | (sums == 0))


@given(problems())
def test_permuting_keys_and_values_together_changes_nothing(problem):
    q, k, v, kwargs, _ = problem
    EXAMPLES["count"] += 1
    kwargs = {key: val for key, val in kwargs.items() if key in ("score",)}
    perm = np.random.default_rng(k.shape[1]).permutation(k.shape[1])
    out = to_numpy(attention(q, k, v, **kwargs))
    permuted = to_numpy(attention(q, k[:, perm], v[:, perm], **kwargs))
    np.testing.assert_allclose(permuted, out, rtol=1e-5, atol=1e-5)
    w = to_numpy(attention_weights(q, k, **kwargs))
    wp = to_numpy(attention_weights(q, k[:, perm], **kwargs))
    np.testing.assert_allclose(wp, w[..., perm], rtol=1e-5, atol=1e-6)


# Relative precision of the half types (unit roundoff 2^-11 and 2^-8), and the
# output tolerance it implies: the scores q·k are formed in the input type, so a
# logit of size |s| carries an error of about |s|·eps, which moves the weights
# by as much and the output by that times max|v|.
HALF_EPS = {"float16": 2.0**-11, "bfloat16": 2.0**-8}


@given(problems(scales=(0.5, 1.0)), st.sampled_from(sorted(HALF_EPS)))
def test_half_precision_stays_finite_and_exact_on_masks(problem, dtype):
    q, k, v, kwargs, block = problem
    EXAMPLES["count"] += 1
    cast = {"q": q, "k": k, "v": v}
    if "bias" in kwargs:
        cast["bias"] = kwargs["bias"]
    half = {name: keras.ops.cast(x, dtype) for name, x in cast.items()}
    rounded = {
        name: to_numpy(keras.ops.cast(x, "float32")).astype("float64") for name, x in half.items()
    }
    kw = dict(kwargs)
    ref_kw = dict(kwargs)
    if "bias" in kw:
        kw["bias"], ref_kw["bias"] = half["bias"], rounded["bias"]
    expected, expected_w = reference_attention(rounded["q"], rounded["k"], rounded["v"], **ref_kw)
    naive, w = attention(
        half["q"], half["k"], half["v"], implementation="naive", return_weights=True, **kw
    )
    chunked = attention(
        half["q"], half["k"], half["v"], implementation="chunked", block_size=block, **kw
    )
    assert keras.backend.standardize_dtype(naive.dtype) == dtype
    assert keras.backend.standardize_dtype(chunked.dtype) == dtype
    naive, chunked = (to_numpy(keras.ops.cast(x, "float32")) for x in (naive, chunked))
    w = to_numpy(keras.ops.cast(w, "float32"))
    for out in (naive, chunked, w):
        assert np.all(np.isfinite(out))
    assert np.all(w[expected_w == 0] == 0)  # masked keys: exactly zero, in half too
    sums = w.sum(-1)
    tv = w.shape[-1]
    assert np.all(np.isclose(sums, 1.0, atol=4 * tv * HALF_EPS[dtype]) | (sums == 0))
    logit = np.abs(rounded["q"]).max() * np.abs(rounded["k"]).max() * q.shape[-1] + 1.0
    atol = HALF_EPS[dtype] * logit * max(1.0, np.abs(rounded["v"]).max())
    np.testing.assert_allclose(naive, expected, atol=atol, rtol=0)
    np.testing.assert_allclose(chunked, expected, atol=atol, rtol=0)


def teardown_module(module):
    print(f"\nhypothesis examples run in {module.__name__}: {EXAMPLES['count']}")
    log = os.environ.get("ATTNKIT_FUZZ_LOG")
    if log:  # `make fuzz` sums the backends' counts
        with open(log, "a") as f:
            f.write(f"{keras.backend.backend()} {EXAMPLES['count']}\n")
