"""score_mod / mask_mod inputs the core must refuse, by name, and learned
parameters given as variables (issue 17, "Bad input"; item 4 of its memory work).

Each bad input is a ValueError naming the argument and the value received, on
the naive and the chunked path; the backend is the suite's (run once per
backend). The cases tests/test_ops_errors.py already holds (a score_mod of the
wrong shape or an int dtype, an int mask_mod, block masks built for another
batch or key length) are not repeated here.
"""

import keras
import numpy as np
import pytest
from keras import ops

from attnkit.ops import attention, block_mask, modding, mods
from attnkit.testing.reference import reference_attention, reference_attention_gradients

B, T, H, HKV, D = 2, 24, 4, 2, 8
BLOCK = (8, 8)
TOL = 5e-6
IMPLS = ("naive", "chunked")


def _qkv(rng, tq=T):
    q = rng.normal(size=(B, tq, H, D)).astype("float32")
    k, v = (rng.normal(size=(B, T, HKV, D)).astype("float32") for _ in range(2))
    return q, k, v


def _call(impl, q, k, v, **kwargs):
    if impl == "chunked":
        kwargs.setdefault("block_size", BLOCK)
    return attention(q, k, v, implementation=impl, **kwargs)


def _causal(b, h, q, kv):
    return q >= kv


# Bad mods --------------------------------------------------------------------


def _float_mask(b, h, q, kv):
    return ops.cast(q >= kv, "float32")  # 0/1 floats are not a boolean mask


def _python_bool_mask(b, h, q, kv):
    return True


def _rank2_mask(b, h, q, kv):
    return ops.reshape(q >= kv, (ops.shape(q)[2], ops.shape(kv)[3]))  # (q, k)


def _heads_mask(b, h, q, kv):
    return ops.broadcast_to(q >= kv, (1, 3, ops.shape(q)[2], ops.shape(kv)[3]))  # 3 of 4 heads


def _transposed_scores(score, b, h, q, kv):
    return ops.swapaxes(score, -1, -2)  # (B, H, k, q): the wrong shape unless square


def _rank3_scores(score, b, h, q, kv):
    return score[:, 0]


def _python_scores(score, b, h, q, kv):
    return 0.0


def _bool_scores(score, b, h, q, kv):
    return score > 0


MOD_CASES = [
    (
        "mask_mod-float",
        dict(mask_mod=_float_mask),
        r"`mask_mod` must return a boolean tensor.*Received: mask_mod returned dtype float32",
    ),
    (
        "mask_mod-python-bool",
        dict(mask_mod=_python_bool_mask),
        r"`mask_mod` must return a boolean tensor.*Received: mask_mod returned True",
    ),
    (
        "mask_mod-rank",
        dict(mask_mod=_rank2_mask),
        r"`mask_mod` must return a rank-4 boolean tensor.*Received: mask_mod returned shape \(",
    ),
    (
        "mask_mod-heads",
        dict(mask_mod=_heads_mask),
        r"`mask_mod` must return .*H=4\. Received: mask_mod returned shape \(1, 3, ",
    ),
    (
        "score_mod-transposed",
        dict(score_mod=_transposed_scores, causal=True, chunked_block=(4, 8)),
        r"`score_mod` must return scores of the shape it receives.*Received: score_mod returned",
    ),
    (
        "score_mod-rank",
        dict(score_mod=_rank3_scores),
        r"`score_mod` must return scores of the shape it receives.*Received: score_mod returned",
    ),
    (
        "score_mod-python-float",
        dict(score_mod=_python_scores),
        r"`score_mod` must return a floating-point tensor.*Received: score_mod returned 0\.0",
    ),
    (
        "score_mod-bool",
        dict(score_mod=_bool_scores),
        r"`score_mod` must return a floating-point tensor.*Received: score_mod returned dtype bool",
    ),
    (
        "score_mod_params-int",
        dict(score_mod=lambda s, b, h, q, kv, p: s + p, score_mod_params=(np.arange(4),)),
        r"`score_mod_params\[0\]` must be a floating-point tensor. Received: "
        r"score_mod_params\[0\]\.dtype=int",
    ),
    (
        "score_mod_params-none",
        dict(score_mod=lambda s, b, h, q, kv, p: s + p, score_mod_params=(None,)),
        r"`score_mod_params\[0\]` must be a floating-point tensor. Received: "
        r"score_mod_params\[0\]=None",
    ),
    (
        "score_mod_params-not-a-tuple",
        dict(score_mod=lambda s, b, h, q, kv, p: s + p, score_mod_params=np.zeros(4, "float32")),
        r"`score_mod_params` must be a tuple of tensors. Received: score_mod_params=array",
    ),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name,kwargs,pattern", MOD_CASES, ids=[c[0] for c in MOD_CASES])
def test_bad_mod_results_raise_value_error(name, kwargs, pattern, impl, rng):
    q, k, v = _qkv(rng, tq=T - 4)  # Tq != Tv: the transposed scores have the wrong shape
    kwargs = dict(kwargs)
    block = kwargs.pop("chunked_block", None)  # non-square blocks: transposing changes them
    if impl == "chunked" and block is not None:
        kwargs["block_size"] = block
    with pytest.raises(ValueError, match=pattern):
        _call(impl, q, k, v, **kwargs)


# Block masks that do not fit ---------------------------------------------------


BLOCK_CASES = [
    (
        "q_len",
        dict(q_len=T - 1),
        r"`block_mask` was built for q_len=23 but the inputs have q_len=24",
    ),
    ("heads", dict(heads=2), r"`block_mask` was built for heads=2 but the inputs have heads=4"),
    ("batch", dict(batch=4), r"`block_mask` was built for batch=4 but the inputs have batch=2"),
    ("kv_len", dict(kv_len=2 * T), r"`block_mask` was built for kv_len=48 but the inputs have"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name,sizes,pattern", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_block_mask_sizes_that_do_not_fit_raise_value_error(name, sizes, pattern, impl, rng):
    q, k, v = _qkv(rng)
    built = dict(batch=1, heads=1, q_len=T, kv_len=T)
    built.update(sizes)
    bm = block_mask(_causal, **built, block_size=BLOCK)
    with pytest.raises(ValueError, match=pattern):
        _call(impl, q, k, v, block_mask=bm)


def test_a_block_mask_that_broadcasts_is_accepted(rng):
    """batch=1 and heads=1 broadcast (the control of the cases above)."""
    q, k, v = _qkv(rng)
    bm = block_mask(_causal, 1, 1, T, T, block_size=BLOCK)
    got = ops.convert_to_numpy(_call("chunked", q, k, v, block_mask=bm))
    want, _ = reference_attention(q, k, v, causal=True)
    np.testing.assert_allclose(got, want, atol=TOL)


# Segment ids -----------------------------------------------------------------


SEGMENT_CASES = [
    (
        "rank-1",
        np.zeros((T,), "int32"),
        r"`segment_ids` must be .*Received: segment_ids.shape=\(24,\)",
    ),
    (
        "rank-3",
        np.zeros((B, T, 1), "int32"),
        r"`segment_ids` must be .*Received: segment_ids.shape=\(2, 24, 1\)",
    ),
    ("float", np.zeros((B, T), "float32"), r"`segment_ids` must be .*segment_ids.dtype=float32"),
]


@pytest.mark.parametrize("name,ids,pattern", SEGMENT_CASES, ids=[c[0] for c in SEGMENT_CASES])
def test_document_mask_segment_ids_of_the_wrong_shape(name, ids, pattern):
    with pytest.raises(ValueError, match=pattern):
        mods.document_mask(ids)


SIZE_CASES = [
    (
        "segment ids shorter than the keys",
        lambda: mods.document_mask(np.zeros((B, T - 4), "int32")),
        r"`segment_ids` of the mask_mod must have shape \(B, Tv\) = \(2, 24\).*"
        r"Received: segment_ids.shape=\(2, 20\)",
    ),
    (
        "segment ids of another batch",
        lambda: mods.document_mask(np.zeros((3, T), "int32")),
        r"`segment_ids` .*\(B, Tv\) = \(2, 24\).*Received: segment_ids.shape=\(3, 24\)",
    ),
    (
        "query segment ids longer than the queries",
        lambda: mods.document_mask(np.zeros((B, T), "int32"), np.zeros((B, T + 1), "int32")),
        r"`query_segment_ids` .*\(B, Tq\) = \(2, 24\).*"
        r"Received: query_segment_ids.shape=\(2, 25\)",
    ),
    (
        "prefix lengths of another batch",
        lambda: mods.prefix_lm(np.array([3, 4, 5])),
        r"`prefix_lengths` .*\(B\) = \(2,\).*Received: prefix_lengths.shape=\(3,\)",
    ),
    (
        "inside and_masks",
        lambda: mods.and_masks(_causal, mods.document_mask(np.zeros((1, T + 2), "int32"))),
        r"`segment_ids` of the mask_mod .*Received: segment_ids.shape=\(1, 26\)",
    ),
    (
        "inside or_masks",
        lambda: mods.or_masks(mods.prefix_lm(np.array([1, 2, 3])), _causal),
        r"`prefix_lengths` of the mask_mod .*Received: prefix_lengths.shape=\(3,\)",
    ),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name,make,pattern", SIZE_CASES, ids=[c[0] for c in SIZE_CASES])
def test_mask_mods_built_for_other_sizes_raise_value_error(impl, name, make, pattern, rng):
    """Without the check JAX reads out of range silently, torch raises
    IndexError and TensorFlow InvalidArgumentError (or nothing, on the naive path)."""
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match=pattern):
        ops.convert_to_numpy(_call(impl, q, k, v, mask_mod=make()))


def test_a_mask_mod_other_than_the_block_masks_raises_value_error(rng):
    q, k, v = _qkv(rng)
    bm = block_mask(_causal, B, H, T, T, block_size=BLOCK)
    with pytest.raises(
        ValueError, match=r"`mask_mod` and `block_mask` disagree.*Received: mask_mod="
    ):
        attention(q, k, v, block_mask=bm, mask_mod=lambda b, h, q, kv: q >= kv)
    out = attention(q, k, v, block_mask=bm, mask_mod=_causal)  # its own mask_mod: fine
    np.testing.assert_allclose(
        ops.convert_to_numpy(out), reference_attention(q, k, v, causal=True)[0], atol=TOL
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_mask_mods_of_the_right_sizes_pass_the_size_check(impl, rng):
    """The same mods built for these sizes (a batch of 1 shared) run and match."""
    q, k, v = _qkv(rng)
    ids = np.repeat(np.arange(3, dtype="int32"), T // 3)[None]  # (1, T): shared
    mod = mods.and_masks(mods.document_mask(ids), mods.prefix_lm(np.array([2, 5])))
    out = ops.convert_to_numpy(_call(impl, q, k, v, mask_mod=mod))

    def np_mod(b, h, qi, ki):
        prefix = np.array([2, 5])[b]
        return (ids[0][qi] == ids[0][ki]) & ((ki < prefix) | (ki <= qi))

    want, _ = reference_attention(q, k, v, mask_mod=np_mod)
    np.testing.assert_allclose(out, want, atol=TOL)


# Learned parameters given as variables -----------------------------------------


def _alibi(score, b, h, q, kv, slopes):
    return score - ops.reshape(slopes, (1, -1, 1, 1)) * ops.cast(ops.abs(q - kv), score.dtype)


def _np_alibi(score, b, h, q, kv, slopes):
    return score - slopes.reshape(1, -1, 1, 1) * np.abs(q - kv)


def _np_alibi_vjp(raw, b, h, q, kv, slopes, ds):
    return ds, (np.sum(-np.abs(q - kv) * ds, axis=(0, 2, 3)),)


def _grads_with_variable(loss, arrays, variable):
    """(loss value, [d q, d k, d v, d variable]) under the backend's autodiff,
    the variable read by the core as a variable (not as an array argument)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = loss(*tensors)
        grads = tape.gradient(value, [*tensors, variable.value])
        return [g.numpy() for g in grads]
    if backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        loss(*tensors).backward()
        return [t.grad.numpy() for t in tensors] + [variable.value.grad.numpy()]
    import jax

    def pure(q, k, v, slopes):
        # How Keras runs a layer under JAX: the variable maps to a traced value.
        with keras.StatelessScope(state_mapping=[(variable, slopes)]):
            return loss(q, k, v)

    grads = jax.grad(pure, argnums=(0, 1, 2, 3))(*arrays, variable.value)
    return [np.asarray(g) for g in grads]


# Until attnkit.ops.attention.prepare reads score_mod_params through
# modding.score_mod_params, TensorFlow's chunked path refuses a variable
# (tf.custom_gradient: "grad_fn must accept keyword argument 'variables'").


@pytest.mark.parametrize("read_first", (False, True), ids=("variable", "read"))
@pytest.mark.parametrize("impl", IMPLS)
def test_score_mod_params_as_a_keras_variable(impl, read_first, rng):
    """A keras.Variable in score_mod_params: forward and every gradient (also the
    variable's) equal the float64 reference on the naive and chunked paths."""
    q, k, v = _qkv(rng)
    slopes = (2.0 ** -np.arange(1, H + 1)).astype("float32")
    variable = keras.Variable(slopes, name="slopes")
    g = rng.normal(size=q.shape).astype("float32")

    def forward(q, k, v):
        params = (variable,)
        if read_first:
            params = modding.score_mod_params(params, _alibi)
        return _call(impl, q, k, v, causal=True, score_mod=_alibi, score_mod_params=params)

    def loss(q, k, v):
        return ops.sum(forward(q, k, v) * ops.convert_to_tensor(g))

    grads = _grads_with_variable(loss, [q, k, v], variable)
    ref = dict(causal=True, score_mod=_np_alibi, score_mod_params=(slopes,))
    dq, dk, dv, _, (d_slopes,) = reference_attention_gradients(
        q, k, v, g, score_mod_vjp=_np_alibi_vjp, return_extras=True, **ref
    )
    for name, got, want in zip(("q", "k", "v"), grads[:3], (dq, dk, dv), strict=True):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=1e-5, err_msg=name)
    # A parameter's gradient sums B·H·Tq·Tv terms: a relative float32 tolerance.
    np.testing.assert_allclose(grads[3], d_slopes, atol=10 * TOL, rtol=1e-5, err_msg="slopes")
    out = ops.convert_to_numpy(forward(q, k, v))
    want, _ = reference_attention(q, k, v, **ref)
    np.testing.assert_allclose(out, want, atol=TOL)


def test_score_mod_params_reads_variables_into_tensors():
    variable = keras.Variable(np.ones(3, "float32"))
    (read,) = modding.score_mod_params((variable,), _alibi)
    assert not isinstance(read, keras.Variable)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        assert not isinstance(read, tf.Variable)
    np.testing.assert_array_equal(ops.convert_to_numpy(read), np.ones(3))
    assert modding.score_mod_params([], None) == ()
