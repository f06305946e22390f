"""The chunked implementation is exact: forward and gradients against float64.

Gradients are checked against a float64 NumPy derivation of softmax attention's
backward pass (written from the equations, independent of the blocked code),
with block sizes small enough that every case crosses several query and key
blocks, and blocks that a causal or window mask hides are skipped.
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from attnkit.ops import attention, chunked
from attnkit.ops.attention import prepare
from attnkit.testing.reference import (
    reference_attention,
    reference_attention_gradients,
    reference_mask,
)

B, H, HKV, D = 2, 4, 2, 8
TOL = 5e-6  # float32 against float64, inputs and cotangents of order 1


def _inputs(rng, tq, tv, layout):
    if layout == "3d":
        shapes = (B, tq, D), (B, tv, D), (B, tv, D)
    else:
        hkv = H if layout == "mha" else (1 if layout == "mqa" else HKV)
        shapes = (B, tq, H, D), (B, tv, hkv, D), (B, tv, hkv, D)
    return [rng.normal(size=s).astype("float32") for s in shapes]


def _padding(tv):
    lengths = np.array([tv, max(tv - 7, 1)])
    return (np.arange(tv)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, Tv)


MASKINGS = {
    "none": lambda tq, tv: {},
    "causal": lambda tq, tv: {"causal": True},
    "causal_top_left": lambda tq, tv: {"causal": True, "alignment": "top_left"},
    "window_top_left": lambda tq, tv: {"window": 4, "alignment": "top_left"},
    "window": lambda tq, tv: {"window": 5},
    "causal_window": lambda tq, tv: {"causal": True, "window": 6},
    "padding": lambda tq, tv: {"mask": _padding(tv)},
    "padding_causal": lambda tq, tv: {"mask": _padding(tv), "causal": True},
}


def gradients(q, k, v, g, **kwargs):
    """(out, dq, dk, dv) of sum(attention(q, k, v, **kwargs) * g) on this backend."""
    backend = keras.backend.backend()

    def loss(q, k, v):
        out = attention(q, k, v, **kwargs)
        return keras.ops.sum(out * keras.ops.convert_to_tensor(g)), out

    if backend == "jax":
        import jax

        # One compiled program: eager JAX compiles every op of the block loops
        # for each new shape (25 s for a 13 x 17 problem in 4 x 5 blocks).
        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
        (_, out), grads = step(q, k, v)
        return (np.asarray(out), *(np.asarray(t) for t in grads))
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(t) for t in (q, k, v)]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value, out = loss(*tensors)
        return (out.numpy(), *(t.numpy() for t in tape.gradient(value, tensors)))
    import torch

    tensors = [torch.tensor(t, requires_grad=True) for t in (q, k, v)]
    value, out = loss(*tensors)
    value.backward()
    return (out.detach().numpy(), *(t.grad.numpy() for t in tensors))


def _check(q, k, v, kwargs, block_size, rng, grad_rtol=0):
    g = rng.normal(size=q.shape[:-1] + (v.shape[-1],)).astype("float32")
    out, dq, dk, dv = gradients(
        q, k, v, g, implementation="chunked", block_size=block_size, **kwargs
    )
    ref_kwargs = dict(kwargs)
    expected, _ = reference_attention(q, k, v, **ref_kwargs)
    np.testing.assert_allclose(out, expected, atol=TOL, rtol=0, err_msg="output")
    for name, got, want in zip(
        "qkv", (dq, dk, dv), reference_attention_gradients(q, k, v, g, **kwargs), strict=True
    ):
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got, want, atol=TOL, rtol=grad_rtol, err_msg=f"d{name}")


# Every masking on GQA with Tq != Tv, and every layout and length pairing under
# the two maskings that exercise the most code (skipped blocks, padded keys).
CASES = [("gqa", (13, 29), m) for m in sorted(MASKINGS)] + [
    (layout, lengths, masking)
    for layout in ("3d", "mha", "gqa", "mqa")
    for lengths in ((23, 23), (29, 13))
    for masking in ("causal_window", "padding_causal")
]


@pytest.mark.parametrize(("layout", "lengths", "masking"), CASES)
def test_forward_and_gradients_equal_float64(layout, lengths, masking, rng):
    tq, tv = lengths
    q, k, v = _inputs(rng, tq, tv, layout)
    kwargs = MASKINGS[masking](tq, tv)
    if layout == "3d" and "mask" in kwargs:
        kwargs["mask"] = kwargs["mask"][:, 0][:, None, :]  # (B, 1, Tv) broadcasts to (B, Tq, Tv)
    _check(q, k, v, kwargs, (4, 6), rng)


@pytest.mark.parametrize("block_size", ((1, 1), (3, 7), (8, 8), (64, 64)))
def test_block_sizes_do_not_change_the_result(block_size, rng):
    q, k, v = _inputs(rng, 17, 17, "gqa")
    _check(q, k, v, {"causal": True}, block_size, rng)


def test_longer_sequence_spanning_many_blocks(rng):
    q, k, v = _inputs(rng, 300, 300, "gqa")
    _check(q, k, v, {"causal": True, "window": 70}, (32, 48), rng)


def _fully_masked_rows_are_zero_with_zero_gradients(rng):
    q, k, v = _inputs(rng, 12, 12, "gqa")
    mask = np.ones((B, 12, 12), dtype=bool)
    mask[0, :5] = False  # batch 0: first five queries see nothing
    mask[1, :, :] = False  # batch 1: nothing at all
    g = rng.normal(size=q.shape[:-1] + (v.shape[-1],)).astype("float32")
    out, dq, dk, dv = gradients(q, k, v, g, mask=mask, implementation="chunked", block_size=(4, 4))
    for t in (out, dq, dk, dv):
        assert np.all(np.isfinite(t))
    assert np.all(out[0, :5] == 0) and np.all(out[1] == 0)
    assert np.all(dq[0, :5] == 0) and np.all(dq[1] == 0)
    assert np.all(dk[1] == 0) and np.all(dv[1] == 0)
    expected, _ = reference_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(out, expected, atol=TOL, rtol=0)
    want_grads = reference_attention_gradients(q, k, v, g, mask=mask)
    for got, want in zip((dq, dk, dv), want_grads, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def _bias_and_cosine_fall_back_to_autodiff_and_stay_exact(rng):
    q, k, v = _inputs(rng, 13, 17, "gqa")
    bias = rng.normal(size=(B, H, 13, 17)).astype("float32")
    g = rng.normal(size=q.shape[:-1] + (D,)).astype("float32")
    for kwargs in ({"bias": bias}, {"score": "cosine", "causal": True}):
        chunk = gradients(q, k, v, g, implementation="chunked", block_size=(4, 5), **kwargs)
        naive = gradients(q, k, v, g, implementation="naive", **kwargs)
        for a, b in zip(chunk, naive, strict=True):
            np.testing.assert_allclose(a, b, atol=TOL, rtol=0)


def test_masked_blocks_are_skipped():
    # A causal 4-block problem needs the 10 lower-triangle blocks of 16.
    cfg = chunked.Blocking(tq=16, tv=16, bq=4, bk=4, causal="bottom_right", window=None, offset=0)
    visited = [
        (i, j)
        for i in range(cfg.nq)
        for j in range(cfg.nk)
        if bool(to_numpy(cfg.needed(i * cfg.bq, j * cfg.bk)))
    ]
    assert len(visited) == 10 and all(j <= i for i, j in visited)
    # A window of 4 keeps only the diagonal band.
    band = chunked.Blocking(tq=16, tv=16, bq=4, bk=4, causal="bottom_right", window=4, offset=0)
    kept = [(i, j) for i in range(4) for j in range(4) if bool(to_numpy(band.needed(i * 4, j * 4)))]
    assert kept == [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3)]
    # Skipping is exact: every visible (query, key) pair lies in a visited block.
    visible = reference_mask(16, 16, causal=True, window=4)
    for i, j in zip(*np.nonzero(visible), strict=True):
        assert (i // 4, j // 4) in kept


def test_blocking_covers_padding(rng):
    q, k, v = _inputs(rng, 10, 10, "mha")
    problem = prepare(q, k, v)
    cfg = chunked.blocking(problem, (4, 3))
    assert (cfg.nq, cfg.nk, cfg.tq_pad, cfg.tv_pad) == (3, 4, 12, 12)
    _check(q, k, v, {}, (4, 3), rng)


def test_invalid_block_size_is_an_error(rng):
    q, k, v = _inputs(rng, 4, 4, "mha")
    with pytest.raises(ValueError, match="`block_size` must be a pair"):
        attention(q, k, v, implementation="chunked", block_size=(0, 4))


@pytest.mark.parametrize(
    "kwargs",
    [
        # Plain causal at this size is in the slow suite: the padded window
        # below visits every kind of block (skipped, full, diagonal, padded).
        pytest.param({"causal": True}, marks=pytest.mark.slow),
        {"causal": True, "window": 1000, "padding": True},
    ],
    ids=["causal", "causal_window_padding"],
)
def test_forward_and_gradients_equal_float64_at_n_4096(kwargs, rng):
    """The issue's size, with the default blocking and grouped-query heads (two
    query heads share one key/value head); padding leaves batch 1 its first
    3000 keys, so blocks are skipped, fully visible, diagonal and padded."""
    n = 4096
    q = rng.normal(size=(2, n, 2, 16)).astype("float32")
    k, v = (rng.normal(size=(2, n, 1, 16)).astype("float32") for _ in range(2))
    kwargs = dict(kwargs)
    if kwargs.pop("padding", False):
        kwargs["mask"] = (np.arange(n)[None, :] < np.array([n, 3000])[:, None])[:, None, :]
    # dK and dV of the first keys sum over thousands of queries (|dv| up to
    # about 5), so a relative term of 32 float32 ulps joins TOL.
    _check(q, k, v, kwargs, None, rng, grad_rtol=32 * 2**-23)


# The two forward loops (dispatch.chunked_loop: "rows" on torch, "blocks"
# elsewhere) share the backward; each must be exact on every backend.


@pytest.fixture(params=("rows", "blocks"))
def loop(request, monkeypatch):
    from attnkit.ops import dispatch

    monkeypatch.setitem(dispatch.CHUNKED_LOOP, keras.backend.backend(), request.param)
    assert dispatch.chunked_loop() == request.param
    return request.param


@pytest.mark.parametrize(
    "masking", ("none", "causal", "window_top_left", "causal_window", "padding_causal")
)
def test_both_loops_equal_float64(loop, masking, rng):
    q, k, v = _inputs(rng, 13, 29, "gqa")
    _check(q, k, v, MASKINGS[masking](13, 29), (4, 6), rng)


# Each runs once per loop (the backend's default among them).
def test_both_loops_zero_fully_masked_rows(loop, rng):
    _fully_masked_rows_are_zero_with_zero_gradients(rng)


def test_both_loops_fall_back_to_autodiff_with_bias(loop, rng):
    _bias_and_cosine_fall_back_to_autodiff_and_stay_exact(rng)


def test_row_blocks_split_long_key_rows_exactly(loop, monkeypatch, rng):
    # 40 elements per block: rows of one query (B·H·Tv = 2·4·29 > 40) or a few.
    monkeypatch.setattr(chunked, "ROW_BLOCK_ELEMENTS", 40)
    monkeypatch.setattr(chunked, "MIN_BLOCK_ROWS", 1)
    q, k, v = _inputs(rng, 13, 29, "gqa")
    _check(q, k, v, {"causal": True, "window": 9, "mask": _padding(29)}, (4, 6), rng)


def test_row_blocks_keep_at_least_min_block_rows(loop, monkeypatch, rng):
    # 40 elements would allow one row against 29 keys; the floor keeps 3 (and
    # the query block of 4 rows ends with a block of 1), forward and backward.
    monkeypatch.setattr(chunked, "ROW_BLOCK_ELEMENTS", 40)
    monkeypatch.setattr(chunked, "MIN_BLOCK_ROWS", 3)
    steps = []
    row_step = chunked._row_step

    def spy(*args):
        steps.append(row_step(*args))
        return steps[-1]

    monkeypatch.setattr(chunked, "_row_step", spy)
    q, k, v = _inputs(rng, 13, 29, "gqa")
    _check(q, k, v, {"mask": _padding(29)}, (4, 6), rng)
    if loop == "rows":
        assert steps and set(steps) <= {3, 1}, steps  # 13 rows: blocks of 4, 4, 4, 1
        assert 3 in steps


def test_row_plan_visits_only_what_the_masks_leave():
    cfg = chunked.Blocking(tq=16, tv=16, bq=4, bk=4, causal="bottom_right", window=None, offset=0)
    plan = chunked.row_plan(cfg)
    assert [p[2] for p in plan] == [((0, 4),), ((0, 8),), ((0, 12),), ((0, 16),)]
    assert all(p[4] for p in plan)  # each block holds part of the diagonal
    band = chunked.Blocking(tq=16, tv=16, bq=4, bk=4, causal="bottom_right", window=3, offset=0)
    assert [p[2] for p in chunked.row_plan(band)] == [
        ((0, 4),),
        ((2, 8),),
        ((6, 12),),
        ((10, 16),),
    ]
    # No mask: one run of every key, no mask work.
    dense = chunked.Blocking(tq=16, tv=16, bq=4, bk=4, causal=None, window=None, offset=0)
    assert all(p[2] == ((0, 16),) and not p[3] and not p[4] for p in chunked.row_plan(dense))
    # A block table: empty blocks are left out (separate runs), full blocks
    # need no mask_mod, a row of empty blocks visits nothing.
    e, p, f = chunked.BLOCK_EMPTY, 1, chunked.BLOCK_FULL
    table = ((f, e, p, e), (e, e, e, e), (f, f, e, e), (e, e, e, f))
    sparse = chunked.Blocking(
        tq=16, tv=16, bq=4, bk=4, causal=None, window=None, offset=0, table=table, mask_mod=bool
    )
    plan = chunked.row_plan(sparse)
    assert [q[2] for q in plan] == [((0, 4), (8, 12)), (), ((0, 8),), ((12, 16),)]
    assert [q[3] for q in plan] == [True, False, False, False]


def test_rows_forward_without_residual_gives_the_same_output(rng):
    from keras import ops

    q, k, v = _inputs(rng, 13, 29, "gqa")
    problem = prepare(q, k, v, causal=True, sinks=np.ones((H,), "float32"))
    cfg = chunked.blocking(problem, (4, 6))
    query = ops.cast(chunked.naive.prescaled_query(problem), "float32")
    inputs = (query, problem.key, problem.value, ops.cast(problem.sinks, "float32"))
    with_lse, lse = chunked.rows_forward(inputs, (None, None), cfg, residual=True)
    without, none = chunked.rows_forward(inputs, (None, None), cfg, residual=False)
    blocks, block_lse = chunked.forward(inputs, (None, None), cfg)
    assert none is None
    np.testing.assert_allclose(to_numpy(without), to_numpy(with_lse), atol=1e-6, rtol=0)
    np.testing.assert_allclose(to_numpy(with_lse), to_numpy(blocks), atol=1e-6, rtol=0)
    np.testing.assert_allclose(to_numpy(lse), to_numpy(block_lse), atol=1e-5, rtol=0)


def test_both_loops_zero_rows_a_score_mod_sets_to_minus_infinity(loop, rng):
    from keras import ops

    q, k, v = _inputs(rng, 13, 29, "gqa")

    def hide_early_queries(score, b, h, q_idx, kv_idx):  # rows q_idx < 20 see nothing
        return ops.where(q_idx < 20, ops.full_like(score, -float("inf")), score)

    out = to_numpy(
        attention(
            q, k, v, score_mod=hide_early_queries, implementation="chunked", block_size=(4, 6)
        )
    )
    assert np.all(np.isfinite(out)) and np.all(out[:, : 20 - 16] == 0)
    expected, _ = reference_attention(q, k, v)
    np.testing.assert_allclose(out[:, 4:], expected[:, 4:], atol=TOL, rtol=0)


def test_small_probabilities_are_flushed_to_zero_on_torch():
    from keras import ops

    from attnkit.ops import backend

    torch = keras.backend.backend() == "torch"  # XLA and TensorFlow flush subnormals themselves
    for dtype, log_t in (("float32", -80.0), ("float64", -700.0)):
        t = np.exp(np.float64(log_t))
        p = np.array([0.0, 1e-300, t / 2, t, t * 1.01, 0.5, 1.0, np.nan], dtype)
        x = np.array([-np.inf, -1e4, log_t - 0.5, log_t + 0.01, -3.0, 0.0, np.nan], dtype)
        if keras.backend.standardize_dtype(ops.convert_to_tensor(p).dtype) != dtype:
            continue  # JAX without x64 holds no float64
        want_p = np.where(p > t, p, 0) if torch else p
        with np.errstate(under="ignore"):
            want_x = np.exp(x)
        if torch:
            want_x = np.where(want_x > t, want_x, 0)
        want_p[-1] = want_x[-1] = np.nan  # NaN stays NaN
        for reuse in (False, True):
            got = to_numpy(backend.flush_small(ops.convert_to_tensor(p), reuse=reuse))
            np.testing.assert_array_equal(got, want_p, err_msg=f"{dtype} reuse={reuse}")
            got = to_numpy(backend.exp_flushed(ops.convert_to_tensor(x), reuse=reuse))
            np.testing.assert_allclose(got, want_x, rtol=1e-6, err_msg=f"{dtype} reuse={reuse}")
    half = ops.convert_to_tensor(np.array([1e-6, 1e-3], "float16"))  # 1e-6 is a float16 subnormal
    np.testing.assert_array_equal(to_numpy(backend.flush_small(half)), to_numpy(half))


def test_both_loops_keep_a_nan_logit_row_nan(loop, rng):
    """torch's flush of small probabilities keeps NaN: a query row with a NaN
    gives a NaN output row and dq row (with and without the log-sum-exp a
    backward needs), and the other rows stay exact."""
    q, k, v = _inputs(rng, 13, 29, "gqa")
    expected, _ = reference_attention(q, k, v, causal=True)  # rows are independent
    q[0, 5, 1, 2] = np.nan  # one query row of one head
    g = rng.normal(size=q.shape[:-1] + (D,)).astype("float32")
    kwargs = {"causal": True, "implementation": "chunked", "block_size": (4, 6)}
    trained = gradients(q, k, v, g, **kwargs)
    inference = to_numpy(attention(q, k, v, **kwargs))
    nan_row = np.zeros(expected.shape, bool)
    nan_row[0, 5, 1] = True
    for out in (trained[0], inference):
        assert np.array_equal(np.isnan(out), nan_row)
        np.testing.assert_allclose(out[~nan_row], expected[~nan_row], atol=TOL, rtol=0)
    assert np.isnan(trained[1][0, 5, 1]).all()  # dq of that row


@pytest.mark.parametrize("as_bias", (False, True), ids=("score_mod", "bias"))
def test_probabilities_in_the_subnormal_range_stay_exact(as_bias, loop, rng):
    """An ALiBi-like slope of 6 per position puts about one probability in
    ten below float32's smallest normal (exp(-6·15) ~ 1e-39), which torch's
    paths set to zero for speed (backend.flush_small, exp_flushed): forward
    and gradients still equal float64, through the custom gradient (a
    score_mod) and through autodiff (a bias), on both loops, and the naive
    path agrees."""
    from keras import ops

    q, k, v = _inputs(rng, 19, 37, "gqa")
    distance = np.abs(np.arange(19)[:, None] + 18 - np.arange(37)[None, :])
    if as_bias:
        kwargs = {"bias": (-6.0 * distance)[None, None].astype("float32")}
        ref_kwargs = kwargs
    else:
        def slope(s, b, h, qi, ki):
            return s - 6.0 * ops.cast(ops.abs(qi - ki), s.dtype)

        kwargs = {"score_mod": slope}
        ref_kwargs = {"score_mod": lambda s, b, h, qi, ki: s - 6.0 * np.abs(qi - ki)}
    grad_kwargs = dict(ref_kwargs)
    if not as_bias:  # d(s - bias)/ds = 1
        grad_kwargs["score_mod_vjp"] = lambda raw, b, h, qi, ki, d_mod: (d_mod, ())
    expected, p = reference_attention(q, k, v, causal=True, **ref_kwargs)
    assert np.mean((p > 0) & (p < 2.0**-126)) > 0.05  # the case is what it claims
    g = rng.normal(size=q.shape[:-1] + (D,)).astype("float32")
    got = gradients(q, k, v, g, implementation="chunked", block_size=(4, 6), causal=True, **kwargs)
    np.testing.assert_allclose(got[0], expected, atol=TOL, rtol=0, err_msg="output")
    want = reference_attention_gradients(q, k, v, g, causal=True, **grad_kwargs)
    for name, a, b in zip("qkv", got[1:], want, strict=True):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0, err_msg=f"d{name}")
    naive = gradients(q, k, v, g, implementation="naive", causal=True, **kwargs)
    for a, b in zip(naive, got, strict=True):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0)
