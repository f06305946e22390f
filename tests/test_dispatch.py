"""implementation="auto" and the checks on explicit implementations."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from attnkit.ops import attention, dispatch, mods
from attnkit.ops.attention import prepare
from attnkit.testing import mods_reference as mods_ref

BACKEND = keras.backend.backend()


def _problem(tq, tv, *, score="scaled_dot", heads=2, kv_heads=1, **kwargs):
    q = np.zeros((1, tq, heads, 4), "float32")
    kv = np.zeros((1, tv, kv_heads, 4), "float32")
    return prepare(q, kv, kv, score=score, **kwargs)


def _auto(problem, return_weights=False, dropout_active=False):
    return dispatch.choose(problem, "auto", return_weights, dropout_active)


def test_auto_follows_the_measured_table():
    n = int(dispatch.CHUNKED_MIN_PAIRS[BACKEND] ** 0.5)
    if BACKEND == "tensorflow":
        # keras' kernel while B·H·Tq·Tv fits the budget, chunked beyond.
        budget = dispatch.FUSED_MAX_SCORES["tensorflow"]  # 2**29
        assert _auto(_problem(64, 64)) == "fused"
        assert _auto(_problem(8192, 8192, heads=8)) == "fused"  # exactly 2**29
        assert _auto(_problem(8192, 8193, heads=8)) == "chunked"
        assert _auto(_problem(16384, 16384, heads=2)) == "fused"
        assert 2 * 16384 * 16385 > budget and _auto(_problem(16384, 16385, heads=2)) == "chunked"
    else:
        small, large = _problem(64, 64), _problem(2048, 2048)
        below = {"torch": "fused", "jax": "naive"}[BACKEND]
        above = "fused" if BACKEND == "torch" else "chunked"
        assert _auto(small) == below and _auto(large) == above
        assert _auto(_problem(n, n)) == below
        assert _auto(_problem(n, n + 1)) == above
    # Without the fused kernel (cosine scores), small problems stay naive.
    assert _auto(_problem(n, n, score="cosine")) == "naive"
    assert _auto(_problem(n, n + 1, score="cosine")) == "chunked"


def test_auto_never_picks_fused_for_what_it_cannot_do():
    large = _problem(2048, 2048)
    assert _auto(large, return_weights=True) == "naive"
    # Dropout is served by chunked (the same mask as naive), never by fused.
    assert _auto(large, dropout_active=True) == "chunked"
    cosine = _auto(_problem(2048, 2048, score="cosine"))
    assert cosine == "chunked"


def test_auto_never_picks_fused_for_mods_or_sinks():
    def mod(score, b, h, q, kv):
        return score

    for kwargs in (
        {"score_mod": mod},
        {"mask_mod": lambda b, h, q, kv: q >= kv},
        {"sinks": np.zeros((2,), "float32")},
    ):
        assert _auto(_problem(64, 64, **kwargs)) == "naive"
        materialised = BACKEND == "tensorflow" and "score_mod" in kwargs  # the next test
        assert _auto(_problem(2048, 2048, **kwargs)) == ("naive" if materialised else "chunked")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="only TensorFlow materialises score_mods")
def test_auto_materialises_score_mods_on_tensorflow_within_the_limit():
    import tensorflow as tf

    def mod(score, b, h, q, kv):
        return score

    limit = dispatch.MATERIALISED_MODS_MAX["tensorflow"]  # 2**27 scores
    assert _auto(_problem(4096, 4096, heads=8, score_mod=mod)) == "naive"  # 2**27
    assert _auto(_problem(4096, 4097, heads=8, score_mod=mod)) == "chunked"  # just above
    assert 8 * 4096 * 4096 == limit
    # Block skipping beats materialising for a mask_mod or a block mask.
    docs = _problem(4096, 4096, heads=8, score_mod=mod, mask_mod=lambda b, h, q, kv: q >= kv)
    assert _auto(docs) == "chunked"
    with tf.GradientTape():  # the backward keeps the scores: the gradient budget
        assert _auto(_problem(4096, 4096, heads=8, score_mod=mod)) == "chunked"
        assert _auto(_problem(2048, 2048, heads=8, score_mod=mod)) == "naive"  # 2**25


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the fused kernel is only auto's on TF")
def test_auto_counts_the_backward_memory_under_a_tape():
    import tensorflow as tf

    problem = _problem(8192, 8192, heads=8)
    assert _auto(problem) == "fused"  # 2**29 scores: fine for a forward
    with tf.GradientTape():
        assert _auto(problem) == "chunked"  # its backward would keep them
        small = 2**13  # heads=1: 2**26 scores, within the gradient budget
        assert _auto(_problem(small, small, heads=1)) == "fused"


@pytest.mark.parametrize("impl", ("naive", "chunked", "fused"))
def test_explicit_choice_is_kept(impl):
    assert dispatch.choose(_problem(8, 8), impl, False, False) == impl


@pytest.mark.parametrize(
    ("impl", "return_weights", "dropout_active", "score", "match"),
    [
        ("chunked", True, False, "scaled_dot", "never materialises the weights"),
        ("fused", True, False, "scaled_dot", "does not return the attention weights"),
        ("fused", False, True, "scaled_dot", "does not apply dropout"),
        ("fused", False, False, "cosine", "only computes dot-product scores"),
    ],
)
def test_unsupported_explicit_choice_is_an_error(
    impl, return_weights, dropout_active, score, match
):
    with pytest.raises(ValueError, match=match):
        dispatch.choose(_problem(8, 8, score=score), impl, return_weights, dropout_active)


@pytest.mark.parametrize("kwargs", ({}, {"causal": True}, {"window": 40, "causal": True}))
def test_auto_equals_naive_above_the_threshold(kwargs, rng):
    # Large enough that auto leaves the naive path on every backend.
    n = 1040
    q = rng.normal(size=(1, n, 2, 8)).astype("float32")
    k = rng.normal(size=(1, n, 1, 8)).astype("float32")
    v = rng.normal(size=(1, n, 1, 8)).astype("float32")
    assert _auto(prepare(q, k, v, **kwargs)) != "naive"
    auto = to_numpy(attention(q, k, v, **kwargs))
    naive = to_numpy(attention(q, k, v, implementation="naive", **kwargs))
    np.testing.assert_allclose(auto, naive, atol=2e-6, rtol=0)


def test_fused_shares_grouped_heads_and_masks_rows(rng):
    q = rng.normal(size=(2, 9, 4, 8)).astype("float32")
    k = rng.normal(size=(2, 9, 1, 8)).astype("float32")
    mask = np.ones((2, 9, 9), bool)
    mask[1, :3] = False
    fused = to_numpy(attention(q, k, k, mask=mask, implementation="fused"))
    naive = to_numpy(attention(q, k, k, mask=mask, implementation="naive"))
    np.testing.assert_allclose(fused, naive, atol=2e-6, rtol=0)
    assert np.all(fused[1, :3] == 0)


@pytest.mark.filterwarnings("error::UserWarning")  # (300, 1): no size-1 softmax warning
@pytest.mark.parametrize(
    "shape", [(600, 600), (700, 530), (900, 300), (300, 700), (1, 1), (300, 1)]
)
def test_fused_causal_matches_reference_across_query_blocks(rng, shape):
    """On TensorFlow causal fused runs over query blocks of 256+ rows, each over
    its key prefix; (900, 300) top-left has blocks past the last key, (300, 700)
    top-left never reaches the last keys. Grouped heads (4 query, 2 key/value)."""
    from test_chunked import gradients

    from attnkit.testing.reference import reference_attention, reference_attention_gradients

    tq, tv = shape
    q = rng.normal(size=(2, tq, 4, 8)).astype("float32")
    k = rng.normal(size=(2, tv, 2, 8)).astype("float32")
    v = rng.normal(size=(2, tv, 2, 5)).astype("float32")  # Dv != D
    g = rng.normal(size=(2, tq, 4, 5)).astype("float32")
    for alignment in ("bottom_right", "top_left"):
        kwargs = dict(causal=True, alignment=alignment)
        out, *grads = gradients(q, k, v, g, implementation="fused", **kwargs)
        expected, _ = reference_attention(q, k, v, **kwargs)
        np.testing.assert_allclose(out, expected, atol=2e-6, rtol=0, err_msg=alignment)
        want = reference_attention_gradients(q, k, v, g, **kwargs)
        for name, got, ref in zip("qkv", grads, want, strict=True):
            np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0, err_msg=f"{alignment} d{name}")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function batch-size signature")
def test_fused_causal_blocks_with_batch_size_unknown_when_traced(rng):
    """The blocked TensorFlow path maps over batch x heads, known only at run time."""
    import tensorflow as tf

    from attnkit.testing.reference import reference_attention

    q = rng.normal(size=(3, 600, 4, 8)).astype("float32")
    kv = rng.normal(size=(3, 600, 2, 8)).astype("float32")
    traced = tf.function(
        lambda a, b: attention(a, b, b, causal=True, implementation="fused"),
        input_signature=[tf.TensorSpec((None, 600, 4, 8)), tf.TensorSpec((None, 600, 2, 8))],
    )
    expected, _ = reference_attention(q, kv, kv, causal=True)
    np.testing.assert_allclose(traced(q, kv).numpy(), expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_fused_causal_half_precision_stays_close(rng, dtype):
    """Half inputs: logits and softmax run in float32 (as keras' kernel does)."""
    from attnkit.testing.reference import reference_attention

    q = rng.normal(size=(1, 520, 2, 16)).astype("float32")
    x = keras.ops.cast(q, dtype)
    out = to_numpy(
        keras.ops.cast(attention(x, x, x, causal=True, implementation="fused"), "float32")
    )
    rounded = to_numpy(keras.ops.cast(x, "float32"))
    expected, _ = reference_attention(rounded, rounded, rounded, causal=True)
    eps = {"float16": 2**-10, "bfloat16": 2**-7}[dtype]
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, expected, atol=8 * eps * np.abs(expected).max(), rtol=0)


@pytest.mark.parametrize("impl", ["auto", "naive", "fused"])
def test_causal_and_window_with_lengths_unknown_when_traced(rng, impl):
    """Sequence lengths unknown until run time (a functional model over
    ``Input((None, ...))``; on TensorFlow also ``tf.function`` with a ``None``
    signature): position masks take the lengths at run time, and bottom-right
    causal alignment is not mistaken for top-left when Tq != Tv."""
    from attnkit.testing.reference import reference_attention

    q = rng.normal(size=(2, 7, 2, 8)).astype("float32")
    kv = rng.normal(size=(2, 11, 2, 8)).astype("float32")
    cases = [
        {"causal": True},
        {"causal": True, "alignment": "top_left"},
        {"causal": True, "window": 3},
        {"window": 3, "alignment": "top_left"},
    ]
    for kwargs in cases:
        expected, _ = reference_attention(q, kv, kv, **kwargs)

        class Attend(keras.layers.Layer):
            def call(self, query, memory, kwargs=kwargs):
                return attention(query, memory, memory, implementation=impl, **kwargs)

        q_in, kv_in = keras.Input((None, 2, 8)), keras.Input((None, 2, 8))
        model = keras.Model([q_in, kv_in], Attend()(q_in, kv_in))
        got = model.predict([q, kv], verbose=0)
        np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0, err_msg=str(kwargs))
        if BACKEND == "tensorflow":
            import tensorflow as tf

            spec = tf.TensorSpec((None, None, 2, 8))
            traced = tf.function(
                lambda a, b, kwargs=kwargs: attention(a, b, b, implementation=impl, **kwargs),
                input_signature=[spec, spec],
            )
            got = traced(q, kv).numpy()
            np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0, err_msg=str(kwargs))


# Additive score_mods (issue 17): the library's ALiBi and T5 bias are marked
# (mods.is_additive); the fused kernel takes their bias materialised.


def test_auto_takes_the_fused_kernel_for_an_additive_mod_while_its_bias_fits(monkeypatch):
    alibi, cap = mods.alibi(2), mods.soft_cap(30.0)
    small, large = (64, 64), (2048, 2048)
    # TensorFlow computes a score_mod on the whole scores up to MATERIALISED_MODS_MAX.
    beyond_naive = "naive" if BACKEND == "tensorflow" else "chunked"
    if BACKEND == "torch":
        assert _auto(_problem(*small, score_mod=alibi)) == "fused"
        assert _auto(_problem(*large, score_mod=alibi)) == "fused"  # 2 * 2048**2 <= 2**27
        monkeypatch.setitem(dispatch.MATERIALISED_BIAS_MAX, "torch", 2 * 2048 * 2048 - 1)
        assert _auto(_problem(*large, score_mod=alibi)) == "chunked"  # beyond: O(N)
        assert _auto(_problem(*small, score_mod=alibi)) == "fused"
    else:  # no materialised bias there: chunked (naive when small; TF materialises mods)
        assert _auto(_problem(*large, score_mod=alibi)) == beyond_naive
        assert _auto(_problem(*small, score_mod=alibi)) == "naive"
    # A mod that is not marked additive never reaches the fused kernel.
    assert _auto(_problem(*small, score_mod=cap)) == "naive"
    assert _auto(_problem(*large, score_mod=cap)) == beyond_naive
    assert _auto(_problem(*large, score_mod=mods.compose_scores(alibi, cap))) == beyond_naive
    # Nor does a mask_mod alongside.
    both = _problem(*large, score_mod=alibi, mask_mod=mods.causal_mask())
    assert _auto(both) == "chunked"


def test_auto_counts_the_gradient_of_a_learned_bias_on_torch(monkeypatch):
    if BACKEND != "torch":
        pytest.skip("the materialised bias is auto's choice on torch only")
    import torch

    table = torch.zeros((32, 2), requires_grad=True)
    problem = _problem(2048, 2048, score_mod=mods.t5_relative_bias(), score_mod_params=(table,))
    monkeypatch.setitem(dispatch.MATERIALISED_BIAS_MAX, "torch", 2 * 2048 * 2048)
    assert _auto(problem) == "chunked"  # bias and its gradient: twice the limit
    with torch.no_grad():
        assert _auto(problem) == "fused"


def _alibi_t5_inputs(rng, tq=11, tv=19):
    q = rng.normal(size=(2, tq, 4, 8)).astype("float32")
    k = rng.normal(size=(2, tv, 2, 8)).astype("float32")
    v = rng.normal(size=(2, tv, 2, 8)).astype("float32")
    table = rng.normal(size=(32, 4)).astype("float32")
    return q, k, v, table


@pytest.mark.parametrize("masking", ("none", "causal", "mask"))
def test_fused_with_additive_mods_equals_float64(masking, rng):
    q, k, v, table = _alibi_t5_inputs(rng)
    tq, tv = q.shape[1], k.shape[1]
    kwargs, mask = {}, None
    if masking == "causal":
        kwargs["causal"] = True
        mask = mods_ref.reference_causal_mask(tq, tv)
    elif masking == "mask":
        mask = rng.uniform(size=(2, 1, tq, tv)) > 0.3
        mask[1, :, :2] = False  # rows with nothing to attend to: zero output
        kwargs["mask"] = mask
    bias = mods_ref.reference_alibi_bias(4, tq, tv) + mods_ref.reference_t5_bias(table, tq, tv)
    mod = mods.compose_scores(mods.alibi(4), mods.t5_relative_bias())
    assert mods.is_additive(mod)
    out = to_numpy(
        attention(
            q, k, v, score_mod=mod, score_mod_params=(table,), implementation="fused", **kwargs
        )
    )
    expected, _ = mods_ref.reference_modded_attention(q, k, v, bias=bias[None], mask=mask)
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=0)
    if masking == "mask":
        assert np.all(out[1, :2] == 0)


def test_fused_alibi_bias_is_built_once_per_mod_and_size(rng):
    from attnkit.ops import fused

    q, k, v, _ = _alibi_t5_inputs(rng)
    mod = mods.alibi(4)
    first = to_numpy(attention(q, k, v, score_mod=mod, implementation="fused"))
    cached = fused._BIAS_CACHE["bias"]
    again = to_numpy(attention(q, k, v, score_mod=mod, implementation="fused"))
    assert fused._BIAS_CACHE["bias"] is cached  # reused, not rebuilt
    np.testing.assert_array_equal(first, again)
    shorter = to_numpy(attention(q, k[:, :15], v[:, :15], score_mod=mod, implementation="fused"))
    assert fused._BIAS_CACHE["bias"] is not cached  # another size: rebuilt
    expected, _ = mods_ref.reference_modded_attention(
        q, k[:, :15], v[:, :15], bias=mods_ref.reference_alibi_bias(4, 11, 15)[None]
    )
    np.testing.assert_allclose(shorter, expected, atol=2e-5, rtol=0)


def test_fused_learned_table_gradient_equals_float64(rng):
    if BACKEND != "torch":
        pytest.skip("gradient through the fused kernel's bias: torch's SDPA")
    import torch

    q, k, v, table = _alibi_t5_inputs(rng)
    g = rng.normal(size=q.shape).astype("float32")
    tensors = [torch.tensor(t, requires_grad=True) for t in (q, k, v, table)]
    out = attention(
        *tensors[:3],
        score_mod=mods.t5_relative_bias(),
        score_mod_params=(tensors[3],),
        implementation="fused",
    )
    (out * torch.tensor(g)).sum().backward()
    bias = mods_ref.reference_t5_bias(table, 11, 19)[None]
    _, _, (dq, dk, dv, dbias) = mods_ref.reference_modded_attention(q, k, v, bias=bias, cotangent=g)
    want = (dq, dk, dv, mods_ref.reference_t5_table_gradient(dbias))
    for got, expected in zip(tensors, want, strict=True):
        np.testing.assert_allclose(got.grad.numpy(), expected, atol=2e-5, rtol=0)


def test_fused_refuses_a_mod_that_is_not_additive():
    problem = _problem(8, 8, score_mod=mods.soft_cap(30.0))
    with pytest.raises(ValueError, match="only score_mods are additive biases"):
        dispatch.choose(problem, "fused", False, False)
    with pytest.raises(ValueError, match="no mask_mod, sinks or block_mask"):
        dispatch.choose(_problem(8, 8, mask_mod=mods.causal_mask()), "fused", False, False)


def test_is_additive_is_declared_never_guessed():
    def user_alibi(score, b, h, q, kv):  # additive in fact, but not marked
        return score - keras.ops.cast(keras.ops.abs(q - kv), score.dtype)

    assert not mods.is_additive(user_alibi)
    assert mods.is_additive(mods.alibi(4)) and mods.is_additive(mods.t5_relative_bias())
    assert mods.is_additive(mods.compose_scores(mods.alibi(4), mods.t5_relative_bias()))
    assert not mods.is_additive(mods.compose_scores(mods.alibi(4), user_alibi))


def test_chunked_loop_per_backend():
    assert dispatch.chunked_loop() == ("rows" if BACKEND == "torch" else "blocks")
