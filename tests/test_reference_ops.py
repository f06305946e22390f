"""Every public op of ``attnkit.ops`` against its float64 reference, on the current backend.

The references are those of ``attnkit.testing.reference``. Each op runs over a
small parameter grid with masks (padding, holes, a fully masked row) where it
takes one; float32 results are compared at the stated tolerances, masks and
one-hot weights exactly. ``test_every_public_op_is_tested`` fails for a public
op that no test here covers.
"""

import inspect
import os

import keras
import numpy as np
import pytest
from conftest import to_numpy

import attnkit.ops
from attnkit import ops as ak
from attnkit.testing import reference as ref

B, TQ, TV, D = 2, 5, 7, 6
SOFTMAX_ATOL = 1e-6  # weights in [0, 1], float32 against float64
ATOL = 1e-5  # sums and products of order-1 float32 inputs

_COVERED = set()


def covers(*names):
    """Marks a test as the direct test of the public ops ``names``."""

    def mark(test):
        _COVERED.update(names)
        return test

    return mark


# Public ops whose reference tests live in another file: name -> that file. The
# block mask is not a computation with a float64 counterpart of its own; its
# block classes are derived by hand and the attention it drives is compared
# with the float64 reference there.
TESTED_ELSEWHERE = {
    "block_mask": "test_score_mods.py",
    # Against attnkit.testing.positions_reference (float64), forward and gradients.
    "rotary": "test_positions.py",
    "sinusoidal_position_encoding": "test_positions.py",
    "qk_norm": "test_positions.py",
}


def test_every_public_op_is_tested():
    public = {
        name
        for name, obj in vars(attnkit.ops).items()
        if inspect.isfunction(obj) and not name.startswith("_")
    }
    assert public, "attnkit.ops exports no op"
    here = os.path.dirname(__file__)
    for name, test_file in TESTED_ELSEWHERE.items():
        with open(os.path.join(here, test_file)) as f:
            assert f"{name}(" in f.read(), (name, test_file)
    missing = sorted(public - _COVERED - set(TESTED_ELSEWHERE))
    assert not missing, f"public ops without a test against the reference: {missing}"
    unknown = sorted(_COVERED - public)
    assert not unknown, f"covered names that attnkit.ops does not export: {unknown}"


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _key_mask(name, batch=B, tv=TV):
    """(B, Tv) key masks; "empty" leaves example 1 with no visible key."""
    if name == "none":
        return None
    if name == "padding":
        return np.arange(tv)[None, :] < np.array([tv, 3])[:batch, None]
    holes = np.random.default_rng(7).uniform(size=(batch, tv)) > 0.4
    holes[:, 0] = True
    if name == "empty":
        holes[1] = False
    return holes


def _tensor(x):
    # Weights reach the ops as backend tensors, as the layers pass them.
    return None if x is None else keras.ops.convert_to_tensor(x)


def _assert_zero_where_masked(got, mask):
    if mask is not None:
        mask = np.broadcast_to(mask, got.shape)
        np.testing.assert_array_equal(got[~mask], 0.0)


# Masks -------------------------------------------------------------------------------


@covers("causal_mask")
@pytest.mark.parametrize("tq,tv", [(5, 5), (3, 7), (7, 3), (1, 6)])
@pytest.mark.parametrize("alignment", ["bottom_right", "top_left"])
def test_causal_mask(tq, tv, alignment):
    got = to_numpy(ak.causal_mask(tq, tv, alignment=alignment))
    np.testing.assert_array_equal(got, ref.reference_mask(tq, tv, causal=alignment))


@covers("sliding_window_mask")
@pytest.mark.parametrize("tq,tv", [(6, 6), (3, 7), (7, 3)])
@pytest.mark.parametrize("window", [1, 2, 4])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("alignment", ["bottom_right", "top_left"])
def test_sliding_window_mask(tq, tv, window, causal, alignment):
    got = to_numpy(ak.sliding_window_mask(tq, tv, window, causal=causal, alignment=alignment))
    want = ref.reference_mask(tq, tv, causal=causal, window=window, alignment=alignment)
    np.testing.assert_array_equal(got, want)


@covers("padding_mask")
@pytest.mark.parametrize("lengths", [[2, 0, 4], [4, 4, 4], [1, 3, 2]])
def test_padding_mask(lengths):
    got = to_numpy(ak.padding_mask(np.array(lengths), 4))
    want = ref.reference_padding_mask(lengths, 4)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(to_numpy(ak.padding_mask(want.astype("int32"))), want)


@covers("combine_masks")
@pytest.mark.parametrize("present", [(0,), (0, 1), (0, 2), (1, 2), (0, 1, 2)])
def test_combine_masks(present):
    rng = np.random.default_rng(3)
    masks = [
        rng.uniform(size=(B, 1, TV)) > 0.3,  # keys
        ref.reference_mask(TQ, TV, causal=True),  # (Tq, Tv)
        rng.uniform(size=(B, TQ, TV)) > 0.2,
    ]
    given = [m if i in present else None for i, m in enumerate(masks)]
    want = np.ones((B, TQ, TV), bool)
    for i in present:
        want = want & masks[i]
    got = to_numpy(ak.combine_masks(*given))
    np.testing.assert_array_equal(np.broadcast_to(got, want.shape), want)
    assert ak.combine_masks(None, None) is None


# Softmax -----------------------------------------------------------------------------


@covers("masked_softmax")
@pytest.mark.parametrize("shape,axis", [((B, TQ, TV), -1), ((B, TQ, TV), 1), ((3, TV), -1)])
@pytest.mark.parametrize("masking", ["none", "holes", "empty", "neg_inf_bias"])
def test_masked_softmax(shape, axis, masking):
    logits = 3.0 * _normal(*shape)
    rng = np.random.default_rng(1)
    mask = None
    if masking != "none":
        mask = rng.uniform(size=shape) > 0.4
    if masking == "empty":  # one whole slice along `axis` masked
        index = [0] * len(shape)
        index[axis] = slice(None)
        mask[tuple(index)] = False
    if masking == "neg_inf_bias":  # logits of -inf (a user bias), no mask
        logits = np.where(mask, logits, -np.inf).astype("float32")
        mask = None
    got = to_numpy(ak.masked_softmax(logits, mask, axis=axis))
    want = ref.reference_masked_softmax(logits, mask, axis=axis)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=SOFTMAX_ATOL, rtol=0)
    _assert_zero_where_masked(got, mask)


# The attention core --------------------------------------------------------------------


def _core_inputs(layout):
    if layout == "3d":
        shapes = (B, TQ, D), (B, TV, D), (B, TV, 3)
    else:  # grouped: 4 query heads on 2 key/value heads
        shapes = (B, TQ, 4, D), (B, TV, 2, D), (B, TV, 2, 3)
    return [_normal(*s, seed=i) for i, s in enumerate(shapes)]


def _core_masking(masking, q):
    if masking == "padding":
        return {"mask": _key_mask("empty")[:, None, :]}  # (B, 1, Tv)
    if masking == "causal_window":
        return {"causal": True, "window": 3}
    if masking == "bias":
        heads = () if q.ndim == 3 else (q.shape[2],)
        return {"bias": _normal(B, *heads, TQ, TV, seed=9)}
    return {}


@covers("attention", "attention_weights")
@pytest.mark.parametrize("layout", ["3d", "gqa"])
@pytest.mark.parametrize("score", ["dot", "scaled_dot", "cosine"])
@pytest.mark.parametrize("masking", ["none", "padding", "causal_window", "bias"])
def test_attention_and_weights(layout, score, masking):
    q, k, v = _core_inputs(layout)
    kwargs = {"score": score, **_core_masking(masking, q)}
    want_out, want_w = ref.reference_attention(q, k, v, **kwargs)
    out, w = ak.attention(q, k, v, return_weights=True, implementation="naive", **kwargs)
    np.testing.assert_allclose(to_numpy(out), want_out, atol=ATOL, rtol=0)
    np.testing.assert_allclose(to_numpy(w), want_w, atol=SOFTMAX_ATOL, rtol=0)
    got_w = to_numpy(ak.attention_weights(q, k, **kwargs))
    np.testing.assert_allclose(got_w, want_w, atol=SOFTMAX_ATOL, rtol=0)
    np.testing.assert_array_equal(got_w[want_w == 0], 0.0)  # masked keys: exactly 0


# Hard attention ------------------------------------------------------------------------


@covers("argmax_weights")
@pytest.mark.parametrize("masking", ["none", "padding", "holes", "empty"])
def test_argmax_weights(masking):
    scores = _normal(B, TQ, TV)
    mask = _key_mask(masking)
    mask = None if mask is None else mask[:, None, :]
    got = to_numpy(ak.argmax_weights(scores, mask))
    np.testing.assert_array_equal(got, ref.reference_argmax_weights(scores, mask))


@covers("topk_weights")
@pytest.mark.parametrize("k", [1, 2, 4, 9])  # 9 > Tv keeps every visible key
@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("masking", ["none", "holes", "empty"])
def test_topk_weights(k, temperature, masking):
    scores = _normal(B, TQ, TV)
    mask = _key_mask(masking)
    mask = None if mask is None else mask[:, None, :]
    got = to_numpy(ak.topk_weights(scores, k, mask, temperature=temperature))
    want = ref.reference_topk_weights(scores, k, mask, temperature=temperature)
    np.testing.assert_allclose(got, want, atol=SOFTMAX_ATOL, rtol=0)
    np.testing.assert_array_equal(got[want == 0], 0.0)
    assert np.all((got > 0).sum(-1) <= k)


@covers("gumbel_softmax_weights")
@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("masking", ["none", "holes", "empty"])
def test_gumbel_softmax_weights(temperature, masking):
    scores = 2.0 * _normal(B, TQ, TV)
    mask = _key_mask(masking)
    mask = None if mask is None else mask[:, None, :]
    # An int seed draws the same noise g for every call of this shape: read it
    # back (up to a per-row constant, which no softmax or argmax sees) from the
    # soft weights of zero scores, softmax(g).
    soft_noise = to_numpy(
        ak.gumbel_softmax_weights(np.zeros_like(scores), seed=11, hard=False)
    ).astype(np.float64)
    noise = np.log(soft_noise)
    soft = to_numpy(
        ak.gumbel_softmax_weights(scores, mask, temperature=temperature, seed=11, hard=False)
    )
    want_soft = ref.reference_gumbel_softmax_weights(
        scores, noise, mask, temperature=temperature, hard=False
    )
    np.testing.assert_allclose(soft, want_soft, atol=ATOL, rtol=0)
    hard = to_numpy(ak.gumbel_softmax_weights(scores, mask, temperature=temperature, seed=11))
    want_hard = ref.reference_gumbel_softmax_weights(
        scores, noise, mask, temperature=temperature, hard=True
    )
    np.testing.assert_array_equal(hard, want_hard)


# Local attention -----------------------------------------------------------------------


@covers("monotonic_positions")
@pytest.mark.parametrize("tq,tv", [(5, 5), (3, 9), (9, 3), (1, 4)])
def test_monotonic_positions(tq, tv):
    got = to_numpy(ak.monotonic_positions(tq, tv))
    np.testing.assert_allclose(got, ref.reference_monotonic_positions(tq, tv), atol=1e-6, rtol=0)


@covers("predictive_positions")
@pytest.mark.parametrize("units", [1, 4])
@pytest.mark.parametrize("key_length", [TV, 30])
def test_predictive_positions(units, key_length):
    q, kernel, vector = _normal(B, TQ, D), _normal(D, units, seed=1), _normal(units, seed=2)
    got = to_numpy(ak.predictive_positions(q, kernel, vector, key_length))
    want = ref.reference_predictive_positions(q, kernel, vector, key_length)
    np.testing.assert_allclose(got, want, atol=ATOL * key_length / TV, rtol=0)


def _positions(kind):
    if kind == "monotonic":
        return ref.reference_monotonic_positions(TQ, TV).astype("float32")  # (Tq,)
    return np.random.default_rng(4).uniform(0, TV, size=(B, TQ)).astype("float32")  # (B, Tq)


@covers("local_weights", "local_attention")
@pytest.mark.parametrize("positions", ["monotonic", "predictive"])
@pytest.mark.parametrize("window,sigma", [(1, None), (2, None), (3, 1.5)])
@pytest.mark.parametrize("masking", ["none", "padding", "empty"])
def test_local_weights_and_attention(positions, window, sigma, masking):
    scores, value = 2.0 * _normal(B, TQ, TV), _normal(B, TV, 3, seed=1)
    p = _positions(positions)
    mask = _key_mask(masking)
    mask = None if mask is None else mask[:, None, :]
    got = to_numpy(ak.local_weights(scores, p, window, sigma=sigma, mask=mask))
    want = ref.reference_local_weights(scores, p, window, sigma=sigma, mask=mask)
    np.testing.assert_allclose(got, want, atol=SOFTMAX_ATOL, rtol=0)
    np.testing.assert_array_equal(got[want == 0], 0.0)  # outside the window, masked
    out, w = ak.local_attention(
        scores, value, p, window, sigma=sigma, mask=mask, return_weights=True
    )
    want_out, want_w = ref.reference_local_attention(
        scores, value, p, window, sigma=sigma, mask=mask
    )
    np.testing.assert_allclose(to_numpy(out), want_out, atol=ATOL, rtol=0)
    np.testing.assert_allclose(to_numpy(w), want_w, atol=SOFTMAX_ATOL, rtol=0)
    alone = ak.local_attention(scores, value, p, window, sigma=sigma, mask=mask)
    np.testing.assert_allclose(to_numpy(alone), want_out, atol=ATOL, rtol=0)


# Attention pooling ---------------------------------------------------------------------


@covers("han_scores", "feedforward_scores")
@pytest.mark.parametrize("queries", [1, 3])
@pytest.mark.parametrize("use_bias", [False, True])
def test_pooling_scores(queries, use_bias):
    h = _normal(B, TV, D)
    kernel, context = _normal(D, 4, seed=1), _normal(4, queries, seed=2)
    bias = _normal(4, seed=3) if use_bias else None
    got = to_numpy(ak.han_scores(h, kernel, context, _tensor(bias)))
    np.testing.assert_allclose(got, ref.reference_han_scores(h, kernel, context, bias), atol=ATOL)
    w = _normal(D, queries, seed=4)
    b = _normal(queries, seed=5) if use_bias else None
    got = to_numpy(ak.feedforward_scores(h, w, _tensor(b)))
    want = ref.reference_feedforward_scores(h, w, b)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@covers("pooling_weights", "attention_pool")
@pytest.mark.parametrize("queries", [1, 3])
@pytest.mark.parametrize("masking", ["none", "padding", "holes", "empty"])
def test_pooling_weights_and_pool(queries, masking):
    h, scores = _normal(B, TV, D), 3.0 * _normal(B, queries, TV, seed=1)
    mask = _key_mask(masking)
    want_out, want_w = ref.reference_attention_pool(h, scores, mask)
    got_w = to_numpy(ak.pooling_weights(scores, mask))
    np.testing.assert_allclose(got_w, want_w, atol=SOFTMAX_ATOL, rtol=0)
    np.testing.assert_array_equal(got_w[want_w == 0], 0.0)
    out, w = ak.attention_pool(h, scores, mask, return_weights=True)
    np.testing.assert_allclose(to_numpy(out), want_out, atol=ATOL, rtol=0)
    np.testing.assert_allclose(to_numpy(w), want_w, atol=SOFTMAX_ATOL, rtol=0)
    # With dropout the returned weights are still those before dropout.
    dropped, w = ak.attention_pool(h, scores, mask, dropout=0.5, seed=1, return_weights=True)
    np.testing.assert_allclose(to_numpy(w), want_w, atol=SOFTMAX_ATOL, rtol=0)
    assert np.all(np.isfinite(to_numpy(dropped)))


# Scores: (..., Tq, D) and (..., Tv, D) -> (..., Tq, Tv) --------------------------------

# Plain, per head, broadcast over heads, and the core's grouped layout.
SCORE_LAYOUTS = {
    "3d": ((B, TQ, D), (B, TV, D)),
    "heads": ((B, 3, TQ, D), (B, 3, TV, D)),
    "broadcast_heads": ((B, 3, TQ, D), (B, 1, TV, D)),
    "grouped": ((B, 2, 2, TQ, D), (B, 2, 1, TV, D)),
}


def _score_inputs(layout, zero_rows=False):
    q_shape, k_shape = SCORE_LAYOUTS[layout]
    q, k = _normal(*q_shape, seed=1), _normal(*k_shape, seed=2)
    if zero_rows:  # a zero query and a zero key: the cosine score must give 0, not NaN
        q[0, ..., 1, :] = 0.0
        k[-1, ..., 2, :] = 0.0
    return q, k


def _out_shape(layout):
    q_shape, k_shape = SCORE_LAYOUTS[layout]
    return np.broadcast_shapes(q_shape[:-2], k_shape[:-2]) + (q_shape[-2], k_shape[-2])


@covers("dot_score", "scaled_dot_score", "cosine_score")
@pytest.mark.parametrize("layout", sorted(SCORE_LAYOUTS))
@pytest.mark.parametrize(
    "name",
    ["dot_score", "scaled_dot_score", "cosine_score"],
)
def test_dot_family_scores(layout, name):
    q, k = _score_inputs(layout, zero_rows=name == "cosine_score")
    got = to_numpy(getattr(ak, name)(q, k))
    want = getattr(ref, f"reference_{name}")(q, k)
    assert got.shape == _out_shape(layout) == want.shape
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@covers("additive_score")
@pytest.mark.parametrize("layout", sorted(SCORE_LAYOUTS))
@pytest.mark.parametrize("scale", ["none", "scalar", "vector"])
def test_additive_score(layout, scale):
    q, k = _score_inputs(layout)
    v = _normal(D, seed=3)
    scale = {"none": None, "scalar": 0.5, "vector": _normal(D, seed=4)}[scale]
    got = to_numpy(ak.additive_score(q, k, v, scale))
    want = ref.reference_additive_score(q, k, v, scale)
    assert got.shape == _out_shape(layout) == want.shape
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("layout", sorted(SCORE_LAYOUTS))
def test_general_score(layout):
    # ops.scores.general_score is not exported from attnkit.ops; the layers use it.
    from attnkit.ops.scores import general_score

    q, k = _score_inputs(layout)
    kernel = _normal(D, D, seed=5)
    got = to_numpy(general_score(q, k, kernel))
    want = ref.reference_general_score(q, k, kernel)
    assert got.shape == _out_shape(layout) == want.shape
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@covers("attention")
@pytest.mark.parametrize("name", ["dot_score", "scaled_dot_score", "cosine_score"])
@pytest.mark.parametrize("layout", ["3d", "gqa"])
def test_score_callables_in_the_core(name, layout):
    # A public score passed as a callable gives the same attention as its name.
    q, k, v = _core_inputs(layout)
    mask = _key_mask("padding")[:, None, :]
    score = name[: -len("_score")]
    want, _ = ref.reference_attention(q, k, v, score=score, mask=mask, causal=True)
    for impl in ("naive", "chunked"):
        got = ak.attention(
            q, k, v, score=getattr(ak, name), mask=mask, causal=True, implementation=impl
        )
        np.testing.assert_allclose(to_numpy(got), want, atol=ATOL, rtol=0, err_msg=impl)
