"""score_mod, mask_mod, learned parameters, sinks and block masks in the core.

Every case is checked against the float64 NumPy reference
(``attnkit.testing.reference``), forward and gradients, on the naive and the
chunked path (whose O(N)-memory backward differentiates the score_mod block
by block). Each mod is written twice: with ``keras.ops`` for the core and with
NumPy (and its derivative) for the reference.
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from keras import ops

from attnkit.ops import attention, attention_weights, block_mask
from attnkit.ops.block_sparsity import BLOCK_EMPTY, BLOCK_FULL, BLOCK_PARTIAL
from attnkit.testing.reference import reference_attention, reference_attention_gradients

B, H, HKV, D = 2, 4, 2, 8
TQ, TV = 13, 29  # bottom-right: q_idx = i + 16
BLOCK = (4, 8)
TOL = 5e-6
CAP = 5.0
BUCKETS = 17  # relative positions -8 .. 8, clipped


# The mods, in keras.ops and in NumPy ------------------------------------------


def alibi(score, b, h, q, kv, slopes):
    return score - ops.reshape(slopes, (1, -1, 1, 1)) * ops.cast(ops.abs(q - kv), score.dtype)


def np_alibi(score, b, h, q, kv, slopes):
    return score - slopes.reshape(1, -1, 1, 1) * np.abs(q - kv)


def np_alibi_vjp(raw, b, h, q, kv, slopes, ds):
    return ds, (np.sum(-np.abs(q - kv) * ds, axis=(0, 2, 3)),)


def softcap(score, b, h, q, kv):
    return CAP * ops.tanh(score / CAP)


def np_softcap(score, *idx):
    return CAP * np.tanh(score / CAP)


def np_softcap_vjp(raw, b, h, q, kv, ds):
    return ds * (1 - np.tanh(raw / CAP) ** 2), ()


def relative_bias(score, b, h, q, kv, table):
    bucket = ops.clip(kv - q + BUCKETS // 2, 0, BUCKETS - 1)  # (1, 1, q, k)
    return score + ops.take(table, bucket)


def np_relative_bias(score, b, h, q, kv, table):
    return score + table[np.clip(kv - q + BUCKETS // 2, 0, BUCKETS - 1)]


def np_relative_bias_vjp(raw, b, h, q, kv, table, ds):
    bucket = np.broadcast_to(np.clip(kv - q + BUCKETS // 2, 0, BUCKETS - 1), ds.shape)
    d_table = np.zeros(BUCKETS)
    np.add.at(d_table, bucket.ravel(), ds.ravel())
    return ds, (d_table,)


SEGMENTS = np.stack([np.arange(TV) // 7, np.minimum(np.arange(TV) // 11, 1)])  # (B, Tv)


def documents(b, h, q, kv):
    seg = ops.reshape(ops.convert_to_tensor(SEGMENTS, "int32"), (-1,))
    return ops.take(seg, b * TV + q) == ops.take(seg, b * TV + kv)  # (B, 1, q, k)


def np_documents(b, h, q, kv):
    return SEGMENTS[b, q] == SEGMENTS[b, kv]


def head_stripes(b, h, q, kv):
    return (kv + h) % 3 != 0  # (1, H, 1, k): a per-head mask


def np_head_stripes(b, h, q, kv):
    return (kv + h) % 3 != 0


def _params(rng):
    return {
        "slopes": (2.0 ** -np.arange(1, H + 1)).astype("float32"),
        "table": rng.normal(size=(BUCKETS,)).astype("float32"),
        "sinks": rng.normal(size=(H,)).astype("float32"),
    }


def _case(name, rng):
    """(kwargs for attnkit, kwargs for the reference, the score_mod's vjp)."""
    p = _params(rng)
    if name == "alibi":
        return (
            dict(score_mod=alibi, score_mod_params=(p["slopes"],)),
            dict(score_mod=np_alibi, score_mod_params=(p["slopes"],)),
            np_alibi_vjp,
        )
    if name == "softcap_documents_causal":
        return (
            dict(score_mod=softcap, mask_mod=documents, causal=True),
            dict(score_mod=np_softcap, mask_mod=np_documents, causal=True),
            np_softcap_vjp,
        )
    if name == "relative_bias_window_sinks":
        return (
            dict(
                score_mod=relative_bias,
                score_mod_params=(p["table"],),
                window=6,
                sinks=p["sinks"],
            ),
            dict(
                score_mod=np_relative_bias,
                score_mod_params=(p["table"],),
                window=6,
                sinks=p["sinks"],
            ),
            np_relative_bias_vjp,
        )
    if name == "head_mask_sinks_padding":
        mask = np.ones((B, 1, TQ, TV), bool)
        mask[1, :, :, 20:] = False
        mask[0, :, 3] = False  # a query row with nothing to attend to: the sink takes it
        return (
            dict(mask_mod=head_stripes, sinks=p["sinks"], mask=mask),
            dict(mask_mod=np_head_stripes, sinks=p["sinks"], mask=mask),
            None,
        )
    raise AssertionError(name)


CASES = (
    "alibi",
    "softcap_documents_causal",
    "relative_bias_window_sinks",
    "head_mask_sinks_padding",
)


def _inputs(rng):
    shapes = (B, TQ, H, D), (B, TV, HKV, D), (B, TV, HKV, D)
    return [rng.normal(size=s).astype("float32") for s in shapes]


def _value_and_grads(fn, arrays):
    """fn(*tensors) -> (loss, out); returns (out, grads of loss) as NumPy."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        (_, out), grads = jax.value_and_grad(fn, argnums=tuple(range(len(arrays))), has_aux=True)(
            *arrays
        )
        return np.asarray(out), [np.asarray(g) for g in grads]
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss, out = fn(*tensors)
        return out.numpy(), [g.numpy() for g in tape.gradient(loss, tensors)]
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    loss, out = fn(*tensors)
    loss.backward()
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("impl", ("naive", "chunked"))
def test_forward_and_gradients_equal_float64(name, impl, rng):
    q, k, v = _inputs(rng)
    kwargs, ref_kwargs, mod_vjp = _case(name, rng)
    g = rng.normal(size=(B, TQ, H, D)).astype("float32")
    extra = ([kwargs["sinks"]] if "sinks" in kwargs else []) + list(
        kwargs.get("score_mod_params", ())
    )
    fixed = {key: val for key, val in kwargs.items() if key not in ("sinks", "score_mod_params")}
    if impl == "chunked":
        fixed["block_size"] = BLOCK

    def loss(q, k, v, *extras):
        call = dict(fixed)
        if "sinks" in kwargs:
            call["sinks"], extras = extras[0], extras[1:]
        if "score_mod_params" in kwargs:
            call["score_mod_params"] = tuple(extras)
        out = attention(q, k, v, implementation=impl, **call)
        return ops.sum(out * ops.convert_to_tensor(g)), out

    out, grads = _value_and_grads(loss, [q, k, v, *extra])
    want, _ = reference_attention(q, k, v, **ref_kwargs)
    np.testing.assert_allclose(out, want, atol=TOL, rtol=0, err_msg="output")
    dq, dk, dv, d_sinks, d_params = reference_attention_gradients(
        q, k, v, g, score_mod_vjp=mod_vjp, return_extras=True, **ref_kwargs
    )
    expected = [dq, dk, dv] + ([d_sinks] if "sinks" in kwargs else []) + list(d_params)
    assert len(grads) == len(expected)
    for i, (got, exp) in enumerate(zip(grads, expected, strict=True)):
        # Parameter gradients sum O(B·H·Tq·Tv) terms: a relative float32 tolerance.
        np.testing.assert_allclose(got, exp, atol=TOL * 10 if i > 2 else TOL, rtol=1e-5)


def test_weights_with_mods_match_reference(rng):
    q, k, _ = _inputs(rng)
    kwargs, ref_kwargs, _ = _case("relative_bias_window_sinks", rng)
    got = to_numpy(attention_weights(q, k, **kwargs))
    _, want = reference_attention(q, k, k, **ref_kwargs)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.all(got.sum(-1) < 1)  # the sink takes a share of every row


def test_one_query_at_the_end_of_a_cache_sees_the_keys_coordinates(rng):
    """q_idx is bottom-right aligned: the last query of a full call and a
    one-step call at the end of the cache give the same row."""
    q, k, v = _inputs(rng)
    kwargs, _, _ = _case("softcap_documents_causal", rng)
    full = to_numpy(attention(q, k, v, implementation="naive", **kwargs))
    step = to_numpy(attention(q[:, -1:], k, v, implementation="naive", **kwargs))
    np.testing.assert_allclose(step[:, 0], full[:, -1], atol=1e-6)


def test_block_mask_skips_and_matches_the_mask_mod(rng):
    q, k, v = _inputs(rng)
    bm = block_mask(documents, B, 1, TQ, TV, block_size=BLOCK)
    assert len(bm.table) == 4 and len(bm.table[0]) == 4
    # Hand-derived: query block 0 holds q_idx 16..19 (documents 2 of row 0,
    # 1 of row 1); key block 0 (keys 0..7) holds no key of either document.
    assert bm.table[0][0] == BLOCK_EMPTY
    assert bm.table[3][3] == BLOCK_PARTIAL  # keys 24..28 and 3 padded keys
    cells = {c for row in bm.table for c in row}
    assert cells <= {BLOCK_EMPTY, BLOCK_PARTIAL, BLOCK_FULL}
    with_table = to_numpy(attention(q, k, v, block_mask=bm, implementation="chunked"))
    without = to_numpy(attention(q, k, v, mask_mod=documents, implementation="chunked"))
    want, _ = reference_attention(q, k, v, mask_mod=np_documents)
    np.testing.assert_allclose(with_table, want, atol=TOL)
    np.testing.assert_allclose(without, want, atol=TOL)


def test_block_mask_full_blocks_drop_the_mask_work():
    """A mask whose blocks are all full or all empty (block-diagonal documents
    of one block each) still gives exact results, and is classified so."""
    n = 16

    def diagonal(b, h, q, kv):
        return q // 4 == kv // 4

    bm = block_mask(diagonal, 1, 1, n, n, block_size=(4, 4))
    assert bm.table == tuple(
        tuple(BLOCK_FULL if i == j else BLOCK_EMPTY for j in range(4)) for i in range(4)
    )
    assert bm.sparsity == 0.75
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(1, n, 2, D)).astype("float32") for _ in range(3))
    got = to_numpy(attention(q, k, v, block_mask=bm, implementation="chunked"))
    want, _ = reference_attention(q, k, v, mask_mod=lambda b, h, q, kv: q // 4 == kv // 4)
    np.testing.assert_allclose(got, want, atol=TOL)


@pytest.mark.parametrize("impl", ("naive", "chunked"))
def test_minus_infinity_from_a_score_mod_is_a_mask_forward_and_backward(impl, rng):
    """A score_mod may hide keys with -inf: single entries (exact zeros of the
    softmax) and whole rows (zero output, zero gradients, never NaN), the
    same as a boolean mask that hides them, against the float64 reference."""
    q, k, v = _inputs(rng)
    hidden_rows = np.arange(TQ) % 4 == 1  # queries 1, 5, 9 see nothing
    hidden = np.zeros((TQ, TV), bool)
    hidden[hidden_rows] = True
    hidden[:, 3] = True  # one key hidden from every query
    hidden[0, 7:20] = True

    def hide(score, b, h, q_idx, kv_idx):  # the same, from the indices of a block
        row = q_idx - (TV - TQ)
        where = ops.logical_or(row % 4 == 1, kv_idx == 3)
        where = ops.logical_or(where, (row == 0) & (kv_idx >= 7) & (kv_idx < 20))
        where = ops.broadcast_to(where, ops.shape(score))
        return ops.where(where, ops.full_like(score, -float("inf")), score)

    g = rng.normal(size=(B, TQ, H, D)).astype("float32")
    extra = {"block_size": BLOCK} if impl == "chunked" else {}

    def loss(q, k, v):
        out = attention(q, k, v, score_mod=hide, implementation=impl, **extra)
        return ops.sum(out * ops.convert_to_tensor(g)), out

    out, grads = _value_and_grads(loss, [q, k, v])
    mask = np.broadcast_to(~hidden, (B, TQ, TV))
    want, _ = reference_attention(q, k, v, mask=mask)
    assert np.all(out[:, hidden_rows] == 0)
    np.testing.assert_allclose(out, want, atol=TOL, rtol=0)
    expected = reference_attention_gradients(q, k, v, g, mask=mask)
    for got, exp in zip(grads, expected, strict=True):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, exp, atol=TOL, rtol=1e-5)
