"""The mods of ``attnkit.ops.mods`` against their float64 references.

First each mod alone on full index grids (the indices the core passes: batch
(B, 1, 1, 1), head (1, H, 1, 1), bottom-right q_idx (1, 1, Tq, 1), kv_idx
(1, 1, 1, Tv), with Tq < Tv so the alignment matters), then through
``attnkit.ops.attention``: ALiBi + T5 bias + soft cap + document mask +
sliding window in one call on the naive and chunked paths, forward and
gradients (q, k, v and the T5 table), and a decoding step at the end of a
cache.
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from attnkit.ops import mods
from attnkit.testing import mods_reference as ref

B, H, TQ, TV = 2, 4, 12, 40  # one grid: queries at key positions 28..39
ATOL = 1e-5  # float32 scores of order 1 (and biases up to ~10) against float64


def _grid(batch=B, heads=H, tq=TQ, tv=TV):
    """The core's four index tensors for a whole (B, H, Tq, Tv) matrix."""
    b = np.arange(batch, dtype="int32").reshape(-1, 1, 1, 1)
    h = np.arange(heads, dtype="int32").reshape(1, -1, 1, 1)
    q = (np.arange(tq, dtype="int32") + tv - tq).reshape(1, 1, -1, 1)
    kv = np.arange(tv, dtype="int32").reshape(1, 1, 1, -1)
    return tuple(keras.ops.convert_to_tensor(x) for x in (b, h, q, kv))


def _scores(rng, batch=B, heads=H, tq=TQ, tv=TV):
    return rng.normal(size=(batch, heads, tq, tv)).astype("float32")


def _mask(mod, **grid):
    out = mod(*_grid(**grid))
    assert keras.backend.standardize_dtype(out.dtype) == "bool"
    assert len(out.shape) == 4
    return to_numpy(out)


# ALiBi ------------------------------------------------------------------------


def test_alibi_slopes_of_the_paper():
    # Powers of two: 2^(-8h/H); 6 heads: those of 4, then 2^-1 and 2^-3 from 8.
    assert mods.alibi_slopes(8) == [2.0**-k for k in range(1, 9)]
    assert mods.alibi_slopes(6) == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    for heads in range(1, 34):
        np.testing.assert_allclose(
            mods.alibi_slopes(heads), ref.reference_alibi_slopes(heads), rtol=1e-15
        )


@pytest.mark.parametrize("heads", [4, 3])
def test_alibi_equals_reference(heads, rng):
    s = _scores(rng, heads=heads)
    out = to_numpy(mods.alibi(heads)(keras.ops.convert_to_tensor(s), *_grid(heads=heads)))
    expected = s + ref.reference_alibi_bias(heads, TQ, TV)[None]
    np.testing.assert_allclose(out, expected, atol=ATOL)


# T5 ---------------------------------------------------------------------------

T5_CONFIGS = [(32, 128, True), (32, 128, False), (64, 256, True), (16, 32, False), (8, 20, True)]


@pytest.mark.parametrize("num_buckets, max_distance, bidirectional", T5_CONFIGS)
def test_t5_bucket_equals_reference(num_buckets, max_distance, bidirectional):
    rel = np.arange(-400, 401, dtype="int32")
    out = to_numpy(mods.t5_bucket(rel, num_buckets, max_distance, bidirectional))
    expected = ref.reference_t5_bucket(rel, num_buckets, max_distance, bidirectional)
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0 and out.max() == num_buckets - 1


def test_t5_bucket_hand_values_of_the_t5_formula():
    # 32 buckets, 128: 16 per side, 8 exact; log(d/8)/log(16)*8 beyond
    # (d=12: 1.17 -> 9, d=16: 2 -> 10, d=127: 7.98 -> 15). Keys after the
    # query (j - i > 0) take buckets 16..31.
    rel = np.array([-200, -128, -127, -16, -12, -8, -7, -1, 0, 1, 7, 12, 200])
    out = to_numpy(mods.t5_bucket(rel))
    assert out.tolist() == [15, 15, 15, 10, 9, 8, 7, 1, 0, 17, 23, 25, 31]
    # Causal: 16 exact, log(d/16)/log(8)*16 beyond; future keys share bucket 0.
    out = to_numpy(mods.t5_bucket(np.array([5, 0, -5, -20, -127, -128]), bidirectional=False))
    assert out.tolist() == [0, 0, 5, 17, 31, 31]
    # 18 buckets, 128: distance 8 gives log(2)/log(32)*5 = 1 exactly, bucket 5.
    # float32 (Mesh TF, HF, keras-hub) gets 5; float64 rounds to 0.99999 -> 4.
    assert to_numpy(mods.t5_bucket(np.array([-8, 8]), 18, 128)).tolist() == [5, 14]
    assert ref.reference_t5_bucket(np.array([-8]), 18, 128).tolist() == [4]


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_relative_bias_equals_reference(bidirectional, rng):
    s = _scores(rng)
    table = rng.normal(size=(8, H)).astype("float32")
    mod = mods.t5_relative_bias(8, 20, bidirectional)  # keys 0..39, queries 28..39
    t = keras.ops.convert_to_tensor
    out = to_numpy(mod(t(s), *_grid(), t(table)))
    expected = s + ref.reference_t5_bias(table, TQ, TV, 8, 20, bidirectional)[None]
    np.testing.assert_allclose(out, expected, atol=ATOL)


# Soft cap and composition -----------------------------------------------------


def test_soft_cap_equals_reference(rng):
    s = 30 * _scores(rng)
    out = to_numpy(mods.soft_cap(20.0)(keras.ops.convert_to_tensor(s), *_grid()))
    np.testing.assert_allclose(out, ref.reference_soft_cap(s, 20.0), atol=1e-4)
    assert np.abs(out).max() < 20.0


def test_compose_scores_applies_left_to_right_and_routes_params(rng):
    s = 4 * _scores(rng)
    table = rng.normal(size=(8, H)).astype("float32")
    mod = mods.compose_scores(mods.alibi(H), mods.t5_relative_bias(8, 20), mods.soft_cap(3.0))
    assert mod.num_params == 1
    t = keras.ops.convert_to_tensor
    out = to_numpy(mod(t(s), *_grid(), t(table)))
    biased = s + ref.reference_alibi_bias(H, TQ, TV) + ref.reference_t5_bias(table, TQ, TV, 8, 20)
    np.testing.assert_allclose(out, ref.reference_soft_cap(biased, 3.0), atol=ATOL)
    # The cap first, then ALiBi: a different function.
    other = to_numpy(mods.compose_scores(mods.soft_cap(3.0), mods.alibi(H))(t(s), *_grid()))
    expected = ref.reference_soft_cap(s, 3.0) + ref.reference_alibi_bias(H, TQ, TV)
    np.testing.assert_allclose(other, expected, atol=ATOL)


def test_compose_scores_counts_a_plain_functions_params(rng):
    def scaled(score, b, h, q, kv, factor):
        return score * factor

    s = _scores(rng)
    t = keras.ops.convert_to_tensor
    mod = mods.compose_scores(scaled, mods.alibi(H))
    out = to_numpy(mod(t(s), *_grid(), t(np.float32(2.0))))
    np.testing.assert_allclose(out, 2 * s + ref.reference_alibi_bias(H, TQ, TV), atol=ATOL)


# Mask mods --------------------------------------------------------------------


def test_position_masks_equal_references():
    np.testing.assert_array_equal(
        _mask(mods.causal_mask())[0, 0], ref.reference_causal_mask(TQ, TV)[0]
    )
    for window in (1, 3):
        np.testing.assert_array_equal(
            _mask(mods.sliding_window(window))[0, 0],
            ref.reference_sliding_window(TQ, TV, window)[0],
        )
    for window, dilation in ((1, 3), (2, 2), (3, 2), (2, 1)):
        got = _mask(mods.dilated_sliding_window(window, dilation))[0, 0]
        np.testing.assert_array_equal(
            got, ref.reference_dilated_sliding_window(TQ, TV, window, dilation)[0]
        )
    for window, sinks in ((2, 0), (2, 2), (1, 4)):
        got = _mask(mods.sliding_window_with_sinks(window, sinks))[0, 0]
        np.testing.assert_array_equal(
            got, ref.reference_sliding_window_with_sinks(TQ, TV, window, sinks)[0]
        )


def test_dilated_window_of_one_is_the_sliding_window():
    a = _mask(mods.dilated_sliding_window(3, 1))
    b = _mask(mods.sliding_window(3))
    np.testing.assert_array_equal(a, b)


SEGMENTS = np.array(
    [[0] * 20 + [1] * 10 + [2] * 6 + [3] * 4, [5] * 30 + [7] * 10], dtype="int32"
)  # (B, Tv)


def test_document_mask_equals_reference():
    got = _mask(mods.document_mask(SEGMENTS))
    expected = ref.reference_document_mask(SEGMENTS)[:, TV - TQ :]
    np.testing.assert_array_equal(got[:, 0], expected)
    # Queries of their own: query i reads query_segment_ids[:, i].
    q_ids = np.array([[2, 0, 1, 1, 9, 3] * 2, [7, 7, 5, 5, 5, 6] * 2], dtype="int64")
    got = _mask(mods.document_mask(SEGMENTS, q_ids))
    np.testing.assert_array_equal(got[:, 0], ref.reference_document_mask(SEGMENTS, q_ids))
    # One packing for every example: segment ids of batch 1 broadcast.
    got = _mask(mods.document_mask(SEGMENTS[:1]))
    np.testing.assert_array_equal(got[1, 0], expected[0])
    # Top-left alignment: q_idx is the query's own index i.
    b, h, q_idx, kv_idx = _grid()
    got = to_numpy(
        mods.document_mask(SEGMENTS, q_ids, alignment="top_left")(b, h, q_idx - (TV - TQ), kv_idx)
    )
    np.testing.assert_array_equal(got[:, 0], ref.reference_document_mask(SEGMENTS, q_ids))


def test_prefix_lm_equals_reference():
    for prefix in (0, 33, np.array([39, 30], dtype="int32")):
        got = _mask(mods.prefix_lm(prefix))
        expected = ref.reference_prefix_lm(prefix, B, TQ, TV)
        np.testing.assert_array_equal(np.broadcast_to(got[:, 0], expected.shape), expected)


def test_and_or_masks():
    causal, window = ref.reference_causal_mask(TQ, TV), ref.reference_sliding_window(TQ, TV, 2)
    doc = ref.reference_document_mask(SEGMENTS)[:, TV - TQ :]
    got = _mask(
        mods.and_masks(mods.causal_mask(), mods.sliding_window(2), mods.document_mask(SEGMENTS))
    )
    np.testing.assert_array_equal(got[:, 0], causal & window & doc)
    got = _mask(mods.or_masks(mods.sliding_window(2), mods.document_mask(SEGMENTS)))
    np.testing.assert_array_equal(got[:, 0], window | doc)
    got = _mask(mods.and_masks(mods.causal_mask()))
    np.testing.assert_array_equal(got[0, 0], causal[0])


# Bad input --------------------------------------------------------------------

BAD = [
    (
        lambda: mods.document_mask(SEGMENTS, alignment="center"),
        r"`alignment` must be one of \('bottom_right', 'top_left'\)\. Received: alignment='center'",
    ),
    (lambda: mods.alibi(0), r"`num_heads` must be a positive integer\. Received: num_heads=0"),
    (lambda: mods.alibi_slopes(2.0), r"Received: num_heads=2\.0"),
    (lambda: mods.soft_cap(0), r"`cap` must be a positive finite number\. Received: cap=0"),
    (lambda: mods.soft_cap(float("inf")), r"Received: cap=inf"),
    (lambda: mods.sliding_window(0), r"`window` must be a positive integer\. Received: window=0"),
    (lambda: mods.dilated_sliding_window(2, 0), r"`dilation` must be .* Received: dilation=0"),
    (lambda: mods.sliding_window_with_sinks(-1), r"Received: window=-1"),
    (lambda: mods.sliding_window_with_sinks(4, -2), r"`num_sinks` must be .* num_sinks=-2"),
    (
        lambda: mods.document_mask(SEGMENTS[0]),
        r"`segment_ids` must be an integer tensor of shape \(B, T\)\. .*shape=\(40,\)",
    ),
    (
        lambda: mods.document_mask(SEGMENTS.astype("float32")),
        r"`segment_ids` must be .* Received: segment_ids.dtype=float32",
    ),
    (lambda: mods.document_mask("abc"), r"`segment_ids` must be .* Received: segment_ids"),
    (
        lambda: mods.document_mask(SEGMENTS, np.zeros((3, 40), "int32")),
        r"`query_segment_ids` must have the batch size .* 2\. Received: .*shape=\(3, 40\)",
    ),
    (
        lambda: mods.prefix_lm(-1),
        r"`prefix_lengths` must be a non-negative integer\. Received: prefix_lengths=-1",
    ),
    (
        lambda: mods.prefix_lm(np.ones((2, 3), "int32")),
        r"`prefix_lengths` must be .* Received: prefix_lengths.shape=\(2, 3\)",
    ),
    (lambda: mods.prefix_lm(np.array([1.5], "float32")), r"Received: prefix_lengths.dtype=float32"),
    (
        lambda: mods.t5_relative_bias(3),
        r"`num_buckets` must be at least 4 .* Received: num_buckets=3",
    ),
    (
        lambda: mods.t5_relative_bias(32, 8),
        r"`max_distance` must exceed the 8 .* Received: max_distance=8",
    ),
    (
        lambda: mods.t5_bucket(np.array([1]), bidirectional=1),
        r"`bidirectional` must be a bool\. Received: bidirectional=1",
    ),
    (
        lambda: mods.t5_bucket(np.array([1.0], "float32")),
        r"`relative_position` must be an integer tensor\. Received: .*dtype=float32",
    ),
    (lambda: mods.and_masks(), r"`mods` must be at least one mod\. Received: mods=\(\)"),
    (
        lambda: mods.or_masks(mods.causal_mask(), 3),
        r"`mods` must be callables\. Received: mods holds 3",
    ),
    (lambda: mods.compose_scores(lambda *a: a[0]), r"`mods` must declare how many params"),
]


@pytest.mark.parametrize("make, match", BAD)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_shapes_at_call_time_are_named(rng):
    t = keras.ops.convert_to_tensor
    s = t(_scores(rng))
    with pytest.raises(
        ValueError,
        match=r"`table` must have shape \(num_buckets, H\) = \(32, 4\)\. .*shape=\(32, 3\)",
    ):
        mods.t5_relative_bias()(s, *_grid(), t(np.zeros((32, 3), "float32")))
    with pytest.raises(
        ValueError,
        match=r"`num_heads` must equal the number of query heads .* 4\. Received: num_heads=8",
    ):
        mods.alibi(8)(s, *_grid())
    mod = mods.compose_scores(mods.t5_relative_bias())
    with pytest.raises(
        ValueError, match=r"`score_mod_params` must hold the 1 params .* Received: 0 params"
    ):
        mod(s, *_grid())


# Through the core -------------------------------------------------------------

T, HQ, HKV, D = 24, 4, 2, 8
BLOCK = (8, 8)  # 3 x 3 blocks: some hidden, some whole, some cut by the masks
DOCS = np.array([[0] * 10 + [1] * 6 + [2] * 8, [3] * 24], dtype="int32")  # (B, T)
T5_ARGS = (8, 20, False)  # num_buckets, max_distance, bidirectional (causal use)
CAP, WINDOW = 5.0, 9
GRAD_TOL = 2e-5  # float32 gradients of order 1 against float64


def _core_inputs(rng, tq=T):
    q = rng.normal(size=(B, tq, HQ, D)).astype("float32")
    k, v = (rng.normal(size=(B, T, HKV, D)).astype("float32") for _ in range(2))
    table = rng.normal(size=(T5_ARGS[0], HQ)).astype("float32")
    return q, k, v, table


def _composed():
    """ALiBi + T5 bias + soft cap, and document mask + sliding window."""
    score_mod = mods.compose_scores(
        mods.alibi(HQ), mods.t5_relative_bias(*T5_ARGS), mods.soft_cap(CAP)
    )
    mask_mod = mods.and_masks(mods.document_mask(DOCS), mods.sliding_window(WINDOW))
    return score_mod, mask_mod


def _composed_reference(q, k, v, table, g=None):
    tq = q.shape[1]
    bias = ref.reference_alibi_bias(HQ, tq, T) + ref.reference_t5_bias(table, tq, T, *T5_ARGS)
    doc = ref.reference_document_mask(DOCS)[:, T - tq :]  # queries at the last tq positions
    mask = ref.reference_causal_mask(tq, T) & ref.reference_sliding_window(tq, T, WINDOW) & doc
    return ref.reference_modded_attention(
        q, k, v, bias=bias[None], cap=CAP, mask=mask[:, None], cotangent=g
    )


def _forward(fn, *tensors):
    """``fn(*tensors)`` as NumPy; on JAX one compiled program (faster than op by op)."""
    if keras.backend.backend() == "jax":
        import jax

        fn = jax.jit(fn)
    return to_numpy(fn(*tensors))


def _gradients(fn, tensors, g):
    """(out, grads of sum(fn(*tensors) * g) w.r.t. each tensor) on this backend."""
    backend = keras.backend.backend()

    def loss(*xs):
        out = fn(*xs)
        return keras.ops.sum(out * keras.ops.convert_to_tensor(g)), out

    if backend == "jax":
        import jax

        argnums = tuple(range(len(tensors)))  # one compiled program, not op by op
        step = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))
        (_, out), grads = step(*tensors)
        return np.asarray(out), [np.asarray(x) for x in grads]
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(x) for x in tensors]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            value, out = loss(*xs)
        return out.numpy(), [tf.convert_to_tensor(x).numpy() for x in tape.gradient(value, xs)]
    import torch

    xs = [torch.tensor(x, requires_grad=True) for x in tensors]
    value, out = loss(*xs)
    value.backward()
    return out.detach().numpy(), [x.grad.numpy() for x in xs]


@pytest.mark.parametrize("implementation", ["naive", "chunked"])
def test_composed_mods_forward_and_gradients_equal_reference(implementation, rng):
    from attnkit.ops import attention

    q, k, v, table = _core_inputs(rng)
    g = rng.normal(size=(B, T, HQ, D)).astype("float32")
    score_mod, mask_mod = _composed()
    block = BLOCK if implementation == "chunked" else None

    def fn(q, k, v, table):
        return attention(
            q,
            k,
            v,
            causal=True,
            score_mod=score_mod,
            score_mod_params=(table,),
            mask_mod=mask_mod,
            implementation=implementation,
            block_size=block,
        )

    out, (dq, dk, dv, dtable) = _gradients(fn, (q, k, v, table), g)
    expected, _, (rq, rk, rv, dbias) = _composed_reference(q, k, v, table, g)
    np.testing.assert_allclose(out, expected, atol=ATOL)
    np.testing.assert_allclose(dq, rq, atol=GRAD_TOL)
    np.testing.assert_allclose(dk, rk, atol=GRAD_TOL)
    np.testing.assert_allclose(dv, rv, atol=GRAD_TOL)
    rtable = ref.reference_t5_table_gradient(dbias, *T5_ARGS)
    assert np.abs(rtable).max() > 0.1  # the table's gradient is not trivially zero
    np.testing.assert_allclose(dtable, rtable, atol=GRAD_TOL)


def test_a_decoding_step_at_the_end_of_the_cache_sees_the_same_mods(rng):
    from attnkit.ops import attention

    q, k, v, table = _core_inputs(rng)
    score_mod, mask_mod = _composed()
    kwargs = dict(causal=True, score_mod=score_mod, score_mod_params=(table,), mask_mod=mask_mod)

    def step(q, k, v):
        return attention(q, k, v, implementation="chunked", block_size=BLOCK, **kwargs)

    # The reference places the 3 queries at key positions 21..23, as the full
    # sequence's last rows (which test_composed_mods_forward_... checks).
    expected = _composed_reference(q[:, -3:], k, v, table)[0]
    np.testing.assert_allclose(_forward(step, q[:, -3:], k, v), expected, atol=ATOL)


@pytest.mark.parametrize("implementation", ["naive", "chunked"])
def test_mask_mods_through_the_core(implementation, rng):
    # One mask mod per head (so the core's per-head mask path runs too): prefix-LM,
    # dilated window, StreamingLLM's window with sinks (causal), and their OR.
    from attnkit.ops import attention

    q, k, v, _ = _core_inputs(rng)
    prefix = mods.prefix_lm(np.array([5, 13], "int32"))
    dilated = mods.dilated_sliding_window(3, 4)
    sinks = mods.and_masks(mods.causal_mask(), mods.sliding_window_with_sinks(4, 2))
    per_head = [prefix, dilated, sinks, mods.or_masks(dilated, sinks)]

    def mask_mod(b, h, q_idx, kv_idx):
        out = per_head[-1](b, h, q_idx, kv_idx)
        for i in (2, 1, 0):
            out = keras.ops.where(h == i, per_head[i](b, h, q_idx, kv_idx), out)
        return out  # (B, H, q, k)

    dil = ref.reference_dilated_sliding_window(T, T, 3, 4)
    snk = ref.reference_causal_mask(T, T) & ref.reference_sliding_window_with_sinks(T, T, 4, 2)
    masks = [ref.reference_prefix_lm([5, 13], B, T, T), dil, snk, dil | snk]
    mask = np.stack([np.broadcast_to(m, (B, T, T)) for m in masks], axis=1)  # (B, H, T, T)
    block = BLOCK if implementation == "chunked" else None
    out = _forward(
        lambda q, k, v: attention(
            q, k, v, mask_mod=mask_mod, implementation=implementation, block_size=block
        ),
        q,
        k,
        v,
    )
    expected, _ = ref.reference_modded_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(out, expected, atol=ATOL)


@pytest.mark.parametrize("implementation", ["naive", "chunked"])
def test_queries_of_a_document_without_keys_get_zeros_not_nan(implementation, rng):
    from attnkit.ops import attention

    q, k, v, _ = _core_inputs(rng, tq=8)
    q_ids = np.array([[0, 1, 9, 2, 9, 9, 0, 1], [3, 3, 3, 4, 3, 3, 3, 3]], dtype="int32")
    mask_mod = mods.document_mask(DOCS, q_ids)  # ids 4 and 9 have no key
    block = BLOCK if implementation == "chunked" else None

    def fn(q, k, v):
        return attention(
            q, k, v, mask_mod=mask_mod, implementation=implementation, block_size=block
        )

    out = _forward(fn, q, k, v)
    assert np.isfinite(out).all()
    assert not out[0, 2].any() and not out[1, 3].any()
    expected, _ = ref.reference_modded_attention(
        q, k, v, mask=ref.reference_document_mask(DOCS, q_ids)[:, None]
    )
    np.testing.assert_allclose(out, expected, atol=ATOL)


def test_a_block_mask_of_mods_skips_blocks_and_keeps_the_values(rng):
    from attnkit.ops import attention, block_mask

    q, k, v, _ = _core_inputs(rng)
    mask_mod = mods.and_masks(mods.causal_mask(), mods.document_mask(DOCS))
    bm = block_mask(mask_mod, B, 1, T, T, block_size=BLOCK)
    assert bm.sparsity > 0.3  # above the diagonal, and across documents

    def fn(q, k, v):
        return attention(q, k, v, block_mask=bm, implementation="chunked")

    mask = ref.reference_causal_mask(T, T) & ref.reference_document_mask(DOCS)
    expected, _ = ref.reference_modded_attention(q, k, v, mask=mask[:, None])
    np.testing.assert_allclose(_forward(fn, q, k, v), expected, atol=ATOL)
