"""Layer-level property tests (hypothesis) over every public layer and the decoders.

One property, ``test_layer_property``, draws a layer variant from ``VARIANTS``
(every score mode, mechanism and mode of every public layer of the registry,
the RNN cell over each mechanism, greedy and beam-search decoding), a dtype
policy (float32, mixed_float16, mixed_bfloat16), lengths, input magnitudes
from 0 and 1e-6 up to the policy's bound (``attnkit.testing.strategies``),
zero vectors and masks with fully masked rows and batch rows, and asserts:

1. the outputs (and attention weights) are finite;
2. exact zeros where the masks say so: zero weight on a masked key, zero
   weights for a padded query and for a query with no visible key, and a zero
   output for those queries (every layer whose output is the context);
3. the gradients of ``sum(output * cotangent)`` with respect to the inputs and
   the trainable weights are finite: always under float32; under a half
   policy whenever every float32 gradient of the same layer, weights and
   inputs is representable in the half type with 16x headroom (a gradient of
   1e6 cannot be finite in float16, whatever the layer does). The cotangent
   is normal times ``1 / max(1, max|q| max|v|, max|v|^2)``, so that the
   backward pass's quantities (logit gradients times keys and values) are of
   order one even at float16's magnitude bound, and the check has teeth
   there;
4. under float32, the output and weights are within a stated tolerance of a
   float64 NumPy reference (``attnkit.testing.reference``) for the variants
   that have one (``reference`` in ``VARIANTS``).

Tolerance of 4: the logits are formed in float32 from at most two sums of D
products (a projection, then a dot product), so a logit carries an error of
at most ``2 * D * eps32 * A`` with ``A`` the sum of the absolute products (the
score of the absolute inputs and weights); a softmax moves each weight by at
most twice its logits' error, so ``atol_w = 8 * D * eps32 * (1 + A)``, and
the output, a sum over Tv weighted values, by at most ``Tv * (atol_w + 4
eps32) * max|v|`` (for MultiHeadAttention, max|v| is that of the projected
values times the output projection's sum). The comparison is made when ``atol_w <= 0.05``
(beyond, the float32 weights are not determined by the inputs and the check
would say nothing); at the magnitude bounds it is skipped, where 1-3 apply.

`make test` runs a derandomised slice (shapes from a fixed set, see
``strategies.FIXED_LENGTHS``; ``LAYER_EXAMPLES`` per backend); `make fuzz` runs
``ATTNKIT_FUZZ_LAYER_EXAMPLES`` per backend with free shapes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import keras
import numpy as np
import pytest
from conftest import to_numpy

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import attnkit.layers as L  # noqa: E402
from attnkit import decoding  # noqa: E402
from attnkit.testing import reference as R  # noqa: E402
from attnkit.testing import strategies as S  # noqa: E402
from attnkit.testing.registry import EXAMPLES as REGISTRY  # noqa: E402
from attnkit.testing.registry import public_layers  # noqa: E402

EXAMPLES = {"count": 0}
EPS32 = 2.0**-24
D = 4  # the feature size of queries, keys and values
UNITS = 6

#: Examples of the default profile (`make test`) per backend: JAX compiles
#: every op for every new shape and dtype, torch and TensorFlow do not.
LAYER_EXAMPLES = {"jax": 6, "torch": 160, "tensorflow": 90}


def _max_examples():
    if S.fuzzing():
        return int(os.environ.get("ATTNKIT_FUZZ_LAYER_EXAMPLES", "1200"))
    return LAYER_EXAMPLES[keras.backend.backend()]


# Variants ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to build and call a layer.

    ``style``: "list" (``layer([q, v], mask=[qm, vm])``), "qv" (MultiHeadAttention),
    "pool" (``layer(v, mask=vm)``), "position" (a position layer on v; an encoding is
    added to v, as it is used), "cell" (AttentionRNNCell in keras.layers.RNN,
    decoder inputs q over memory v), "greedy"/"beam" (attnkit.decoding).
    ``scores``: the call can return the weights (``return_attention_scores``).
    ``context``: the output is the weights times the values, so a query with
    no visible key has a zero output (MultiHeadAttention's is its output bias).
    ``reference``: ``f(layer, q, v, absolute)``, the float64 scores (with
    ``absolute``, those of the absolute inputs and weights: the tolerance's
    ``A``), or None.
    """

    layer: str
    make: Callable
    style: str = "list"
    causal: bool = False
    window: int | None = None
    training: bool | None = None
    scores: bool = True
    context: bool = True
    reference: Callable | None = None


def _weights(layer):
    """{name: float64 array} of a built layer's weights, by their last path parts."""
    return {"/".join(w.path.split("/")[-2:]): to_numpy(w).astype("float64") for w in layer.weights}


def _attention_reference(score_mode):
    def scores(layer, q, v, absolute):
        w = {n.split("/")[-1]: x for n, x in _weights(layer).items()}
        f = np.abs if absolute else (lambda x: x)
        q, v = f(np.asarray(q, np.float64)), f(np.asarray(v, np.float64))
        if score_mode == "dot":
            return R.reference_dot_score(q, v)
        if score_mode == "scaled_dot":
            return R.reference_scaled_dot_score(q, v)
        if score_mode == "cosine":  # |cos| <= 1 whatever the inputs
            return (
                np.ones((q.shape[0], q.shape[1], v.shape[1]))
                if absolute
                else (R.reference_cosine_score(q, v))
            )
        if score_mode == "general":
            return R.reference_general_score(q, v, f(w["kernel"]))
        if score_mode == "concat":
            if absolute:  # the tanh's argument, times the weight
                arg = q[:, :, None, :] + v[:, None, :, :]
                return np.abs(w["concat_score_weight"]) * arg.sum(-1)
            return R.reference_concat_score(q, v, 1.0, w["concat_score_weight"])
        raise AssertionError(score_mode)

    return scores


def _additive_reference(layer, q, v, absolute):
    w = {n.split("/")[-1]: x for n, x in _weights(layer).items()}
    q, v = np.asarray(q, np.float64), np.asarray(v, np.float64)
    if "query_kernel" in w:
        q = q @ w["query_kernel"] + w.get("bias", 0.0)
        v = v @ w["key_kernel"]
    if absolute:  # |scale| times the tanh's argument
        arg = np.abs(q)[:, :, None, :] + np.abs(v)[:, None, :, :]
        return (arg * np.abs(w["scale"])).sum(-1)
    return R.reference_additive_score(q, v, w["scale"])


def _luong_reference(layer, q, v, absolute):
    w = {n.split("/")[-1]: x for n, x in _weights(layer).items()}
    f = np.abs if absolute else (lambda x: x)
    kernel = w.get("memory_kernel")
    scale = 1.0 / np.sqrt(q.shape[-1]) if layer.score_mode == "scaled_dot" else 1.0
    return np.stack(
        [
            R.reference_luong_energies(
                f(q[:, i]), f(v), None if kernel is None else f(kernel), scale
            )
            for i in range(q.shape[1])
        ],
        1,
    )


def _bahdanau_reference(layer, q, v, absolute):
    w = {n.split("/")[-1]: x for n, x in _weights(layer).items()}
    if absolute:
        arg = (np.abs(q) @ np.abs(w["query_kernel"]))[:, :, None, :] + (
            np.abs(v) @ np.abs(w["memory_kernel"])
        )[:, None, :, :]
        return (arg * np.abs(w["attention_v"])).sum(-1) * (1 + np.abs(w.get("attention_g", 0)))
    return np.stack(
        [
            R.reference_bahdanau_energies(
                q[:, i],
                v,
                w["query_kernel"],
                w["memory_kernel"],
                w["attention_v"],
                w.get("attention_g"),
                w.get("attention_b"),
            )
            for i in range(q.shape[1])
        ],
        1,
    )


def _pooling_reference(layer, q, v, absolute):
    w = {n.split("/")[-1]: x for n, x in _weights(layer).items()}
    if absolute:  # the tanh's argument, times |u|
        hidden = np.abs(v) @ np.abs(w["kernel"]) + np.abs(w.get("bias", 0.0))
        if layer.score == "feedforward":
            return np.swapaxes(hidden, 1, 2)
        return np.swapaxes(hidden @ np.abs(w["context"]), 1, 2)
    if layer.score == "feedforward":
        return R.reference_feedforward_scores(v, w["kernel"], w.get("bias"))
    return R.reference_han_scores(v, w["kernel"], w["context"], w.get("bias"))  # (B, 1, T)


def _mha_reference(layer, q, v, absolute):
    w = _weights(layer)
    if absolute:  # |q W_q| |k W_k|ᵀ / sqrt(Dk), summed over heads
        qh = np.einsum("btd,dhk->bthk", np.abs(q), np.abs(w["query/kernel"]))
        kh = np.einsum("btd,dhk->bthk", np.abs(v), np.abs(w["key/kernel"]))
        if kh.shape[2] != qh.shape[2]:
            kh = np.repeat(kh, qh.shape[2] // kh.shape[2], axis=2)
        return np.einsum("bqhk,bvhk->bqv", qh, kh) / np.sqrt(qh.shape[-1])
    return w


def _mha(**kwargs):
    return lambda: L.MultiHeadAttention(num_heads=2, key_dim=D, **kwargs)


def _cell(mechanism, cell=keras.layers.LSTMCell):
    return lambda: L.AttentionRNNCell(cell(5), mechanism(), alignment_history=True)


VARIANTS = {
    **{
        f"Attention/{m}": Variant(
            "Attention", lambda m=m: L.Attention(score_mode=m), reference=_attention_reference(m)
        )
        for m in ("dot", "scaled_dot", "general", "cosine", "concat")
    },
    "Attention/scaled_dot/causal_window": Variant(
        "Attention",
        lambda: L.Attention(score_mode="scaled_dot", sliding_window=2),
        causal=True,
        window=2,
        reference=_attention_reference("scaled_dot"),
    ),
    "AdditiveAttention/keras": Variant(
        "AdditiveAttention", lambda: L.AdditiveAttention(), reference=_additive_reference
    ),
    "AdditiveAttention/bahdanau": Variant(
        "AdditiveAttention", lambda: L.AdditiveAttention(units=UNITS), reference=_additive_reference
    ),
    "MultiHeadAttention/naive": Variant(
        "MultiHeadAttention",
        _mha(implementation="naive"),
        "qv",
        context=False,
        reference=_mha_reference,
    ),
    "MultiHeadAttention/chunked/gqa": Variant(
        "MultiHeadAttention",
        _mha(implementation="chunked", num_key_value_heads=1),
        "qv",
        scores=False,
        context=False,
        reference=_mha_reference,
    ),
    "MultiHeadAttention/auto/causal": Variant(
        "MultiHeadAttention", _mha(), "qv", causal=True, context=False, reference=_mha_reference
    ),
    "MultiHeadAttention/fused/window": Variant(
        "MultiHeadAttention",
        _mha(implementation="fused", sliding_window=2),
        "qv",
        window=2,
        scores=False,
        context=False,
        reference=_mha_reference,
    ),
    "AttentionPooling/han": Variant(
        "AttentionPooling", lambda: L.AttentionPooling(UNITS), "pool", reference=_pooling_reference
    ),
    "AttentionPooling/feedforward": Variant(
        "AttentionPooling",
        lambda: L.AttentionPooling(score="feedforward"),
        "pool",
        reference=_pooling_reference,
    ),
    **{
        f"LocalAttention/{mode}/{s}": Variant(
            "LocalAttention", lambda mode=mode, s=s: L.LocalAttention(2, mode=mode, score_mode=s)
        )
        for mode in ("local-m", "local-p")
        for s in ("dot", "general", "concat")
    },
    "HardAttention/gumbel/inference": Variant(
        "HardAttention", lambda: L.HardAttention(seed=1), training=False
    ),
    "HardAttention/gumbel/training": Variant(
        "HardAttention", lambda: L.HardAttention(seed=1, score_mode="scaled_dot"), training=True
    ),
    "HardAttention/topk/general": Variant(
        "HardAttention", lambda: L.HardAttention(method="topk", k=2, score_mode="general")
    ),
    **{
        f"LuongAttention/{m}": Variant(
            "LuongAttention", lambda m=m: L.LuongAttention(score_mode=m), reference=_luong_reference
        )
        for m in ("dot", "general", "scaled_dot")
    },
    "BahdanauAttention": Variant(
        "BahdanauAttention", lambda: L.BahdanauAttention(UNITS), reference=_bahdanau_reference
    ),
    "BahdanauAttention/normalize": Variant(
        "BahdanauAttention",
        lambda: L.BahdanauAttention(UNITS, normalize=True),
        reference=_bahdanau_reference,
    ),
    **{
        f"MonotonicAttention/{score}/{mode}": Variant(
            "MonotonicAttention",
            lambda score=score, mode=mode: L.MonotonicAttention(
                UNITS if score == "bahdanau" else None, score=score, mode=mode
            ),
        )
        for score in ("bahdanau", "luong")
        for mode in ("parallel", "recursive", "hard")
    },
    "MonotonicAttention/noise/training": Variant(
        "MonotonicAttention",
        lambda: L.MonotonicAttention(UNITS, sigmoid_noise=1.0, seed=3),
        training=True,
    ),
    "ForwardAttention": Variant("ForwardAttention", lambda: L.ForwardAttention(UNITS)),
    "ForwardAttention/plain": Variant(
        "ForwardAttention", lambda: L.ForwardAttention(UNITS, transition_agent=False)
    ),
    "LocationSensitiveAttention": Variant(
        "LocationSensitiveAttention",
        lambda: L.LocationSensitiveAttention(UNITS, filters=3, kernel_size=3),
    ),
    "AttentionRNNCell/lstm/bahdanau": Variant(
        "AttentionRNNCell", _cell(lambda: L.BahdanauAttention(UNITS)), "cell"
    ),
    "AttentionRNNCell/gru/luong": Variant(
        "AttentionRNNCell",
        _cell(lambda: L.LuongAttention("general"), keras.layers.GRUCell),
        "cell",
    ),
    "AttentionRNNCell/lstm/monotonic": Variant(
        "AttentionRNNCell", _cell(lambda: L.MonotonicAttention(UNITS, mode="recursive")), "cell"
    ),
    "AttentionRNNCell/lstm/forward": Variant(
        "AttentionRNNCell", _cell(lambda: L.ForwardAttention(UNITS)), "cell"
    ),
    "AttentionRNNCell/lstm/location": Variant(
        "AttentionRNNCell",
        _cell(lambda: L.LocationSensitiveAttention(UNITS, filters=3, kernel_size=3)),
        "cell",
    ),
    # Position layers (style "position": ``layer(v, mask=vm)``): finite outputs and gradients.
    "RotaryEmbedding/yarn": Variant(
        "RotaryEmbedding",
        lambda: L.RotaryEmbedding(scaling="yarn", scaling_factor=2.0, original_max_position=4),
        "position",
        scores=False,
        context=False,
    ),
    "SinusoidalPositionEncoding": Variant(
        "SinusoidalPositionEncoding",
        lambda: L.SinusoidalPositionEncoding(),
        "position",
        scores=False,
        context=False,
    ),
    "greedy_decode": Variant(
        "AttentionRNNCell", _cell(lambda: L.BahdanauAttention(UNITS)), "greedy"
    ),
    "beam_search": Variant("AttentionRNNCell", _cell(lambda: L.LuongAttention("general")), "beam"),
}

if hasattr(L, "GroupedQueryAttention"):  # issue 16 item 3, landing alongside this test
    VARIANTS["GroupedQueryAttention/causal"] = Variant(
        "GroupedQueryAttention",
        lambda: L.GroupedQueryAttention(head_dim=D, num_query_heads=2, num_key_value_heads=1),
        "qv",
        causal=True,
        context=False,
    )

VOCAB = 7


def test_every_public_layer_has_a_variant():
    covered = {v.layer for v in VARIANTS.values()}
    assert set(public_layers()) <= covered, set(public_layers()) - covered
    assert set(REGISTRY) <= covered, set(REGISTRY) - covered


# Running a variant ---------------------------------------------------------------


def _build(variant, policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        layer = variant.make()
        extra = {"policy": policy}
        if variant.style in ("greedy", "beam"):
            extra["embedding"] = keras.layers.Embedding(VOCAB, D)
            extra["projection"] = keras.layers.Dense(VOCAB)
        return layer, extra
    finally:
        keras.config.set_dtype_policy(previous)


def _forward(variant, layer, extra, q, v, qm, vm):
    """(output, weights (B, [H,] Tq, Tv) or None) as tensors."""
    kw = {} if variant.training is None else {"training": variant.training}
    scores = {"return_attention_scores": True} if variant.scores else {}
    if variant.style == "list":
        call = {"use_causal_mask": True} if variant.causal else {}
        return layer([q, v], mask=[qm, vm], **scores, **kw, **call)
    if variant.style == "qv":
        out = layer(q, v, query_mask=qm, value_mask=vm, use_causal_mask=variant.causal, **scores)
        return out if variant.scores else (out, None)
    if variant.style == "pool":
        return layer(v, mask=vm, return_attention_scores=True)
    if variant.style == "position":
        out = layer(v, mask=vm)
        if variant.layer == "SinusoidalPositionEncoding":  # added to the embeddings
            out = keras.ops.cast(v, out.dtype) + out
        return out, None
    state = layer.get_initial_state(memory=v, memory_mask=vm)
    if "rnn" not in extra:  # made once the cell knows its memory's shape
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(extra["policy"])
        try:
            extra["rnn"] = keras.layers.RNN(layer, return_sequences=True)
        finally:
            keras.config.set_dtype_policy(previous)
    output, alignments = layer.split_output(extra["rnn"](q, initial_state=state))
    return output, alignments


def _decode(variant, layer, extra, v, vm, max_length):
    state = layer.get_initial_state(memory=v, memory_mask=vm)  # before the step builds the cell
    step = decoding.cell_step(layer, extra["embedding"], extra["projection"])
    if variant.style == "greedy":
        return decoding.greedy_decode(
            step, state, start_token=1, end_token=0, max_length=max_length
        )
    return decoding.beam_search(
        step,
        state,
        start_token=1,
        end_token=0,
        max_length=max_length,
        beam_width=2,
        length_penalty=0.6,
    )


def _variables(layer, extra):
    owner = extra.get("rnn", layer)
    return list(owner.trainable_variables)


def _gradients(fn, arrays, variables, cotangents):
    """Gradients of ``sum_i sum(fn(*tensors)[i] * cotangents[i])`` w.r.t. arrays and variables."""

    def loss(outs):
        return sum(
            keras.ops.sum(keras.ops.cast(o, "float32") * keras.ops.convert_to_tensor(c))
            for o, c in zip(outs, cotangents, strict=True)
        )

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def stateless(xs, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return loss(fn(*xs))

        grads = jax.jit(jax.grad(stateless, argnums=(0, 1)))(
            [keras.ops.convert_to_tensor(a) for a in arrays], [v.value for v in variables]
        )
        grads = list(grads[0]) + list(grads[1])
    elif backend == "torch":
        import torch

        xs = [torch.tensor(a, requires_grad=True) for a in arrays]
        for v in variables:
            v.value.grad = None
        loss(fn(*xs)).backward()
        grads = [x.grad for x in xs] + [v.value.grad for v in variables]
    else:
        import tensorflow as tf

        xs = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            value = loss(fn(*xs))
        grads = tape.gradient(value, xs + [v.value for v in variables])
    return [
        np.zeros(np.shape(t)) if g is None else to_numpy(g).astype("float64")
        for t, g in zip(list(arrays) + [v.value for v in variables], grads, strict=True)
    ]


# The property ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """One drawn example: a variant, a policy, lengths, a seed and the two inputs'
    specifications. ``arrays()`` makes its inputs; printed, it is a reproduction:
    ``run_layer_problem(Problem(...))``."""

    name: str
    policy: str
    lengths: tuple
    seed: int
    query: S.InputSpec
    value: S.InputSpec

    def arrays(self):
        """(query (B, Tq, D), value (B, Tv, D), query mask (B, Tq), value mask (B, Tv))."""
        b, tq, tv = self.lengths
        rng = np.random.default_rng(self.seed)
        q = S.make_tensor(self.query, (b, tq, D), rng)
        v = S.make_tensor(self.value, (b, tv, D), rng)
        return (
            q,
            v,
            S.make_mask(self.query.mask, b, tq, rng),
            S.make_mask(self.value.mask, b, tv, rng),
        )


@st.composite
def layer_problems(draw):
    name = draw(st.sampled_from(sorted(VARIANTS)))
    policy = draw(st.sampled_from(S.POLICIES))
    query_masks = S.MASK_KINDS if VARIANTS[name].style in ("list", "qv") else ("none",)
    return Problem(
        name,
        policy,
        draw(S.lengths()),
        draw(S.seeds()),
        draw(S.input_specs(policy, query_masks)),
        draw(S.input_specs(policy)),
    )


def _visible(variant, b, tq, tv, qm, vm):
    """(B, Tq, Tv) boolean: which keys a query may attend to."""
    full = np.ones((b, tq, tv), bool)
    if qm is not None:
        full &= qm[:, :, None]
    if vm is not None:
        full &= vm[:, None, :]
    if variant.causal or variant.window is not None:
        full &= R.reference_mask(
            tq, tv, causal=variant.causal, window=variant.window, alignment="top_left"
        )[None]
    return full


def _check_reference(variant, layer, q, v, visible, out, weights):
    q64, v64 = q.astype("float64"), v.astype("float64")
    scale = variant.reference(layer, q64, v64, True)  # A: the absolute logit terms
    atol_w = 8 * D * EPS32 * (1 + float(np.max(scale)))
    if atol_w > 0.05:  # not determined by the inputs in float32; see the module docstring
        return False
    tv = v.shape[1]
    if variant.layer == "MultiHeadAttention":
        expected, expected_w = R.reference_multi_head_attention(
            variant.reference(layer, q64, v64, False), q64, v64, mask=visible
        )
        # The output projection sums H * Dv entries of the context.
        w = _weights(layer)
        v_proj = np.abs(v64) @ np.abs(w["value/kernel"]).reshape(D, -1)  # (B, Tv, H * Dv)
        vmax = (
            float(v_proj.max())
            * v_proj.shape[-1]
            * float(np.abs(w["attention_output/kernel"]).max())
        )
    elif variant.style == "pool":
        expected, expected_w = R.reference_attention_pool(
            v64,
            variant.reference(layer, q64, v64, False),
            None if visible is None else visible[:, 0],
        )
        expected, expected_w = expected[:, 0], expected_w[:, 0]
        vmax = float(np.max(np.abs(v64)))
    else:
        expected, expected_w = R.reference_attend(
            variant.reference(layer, q64, v64, False), v64, visible
        )
        vmax = float(np.max(np.abs(v64)))
    atol_out = tv * (atol_w + 4 * EPS32) * max(vmax, 1e-30)
    if weights is not None:
        np.testing.assert_allclose(weights, expected_w, rtol=0, atol=atol_w, err_msg="weights")
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol_out, err_msg="output")
    return True


# Known failures, kept out of the property by name until their fix lands: each entry
# is (variant-name prefix, policies, condition on the problem, the bug it waits for).
KNOWN_FAILURES = []


def _known_failure(problem):
    return [
        bug
        for prefix, policies, condition, bug in KNOWN_FAILURES
        if problem.name.startswith(prefix) and problem.policy in policies and condition(problem)
    ]


@settings(max_examples=_max_examples())
@given(layer_problems())
def test_layer_property(problem):
    assume(not _known_failure(problem))
    EXAMPLES["count"] += 1
    run_layer_problem(problem)


def run_layer_problem(problem):
    """Checks 1-4 of the module docstring on one problem (also the reproductions' entry)."""
    variant, policy = VARIANTS[problem.name], problem.policy
    q, v, qm, vm = problem.arrays()
    b, tq, tv = problem.lengths
    layer, extra = _build(variant, policy)
    if variant.style in ("greedy", "beam"):
        tokens, scores, lengths = (to_numpy(t) for t in _decode(variant, layer, extra, v, vm, 4))
        assert np.all(np.isfinite(scores)) and np.all(scores <= 1e-4), scores
        assert tokens.shape == (b, 4) and np.all((tokens >= 0) & (tokens < VOCAB)), tokens
        assert np.all((lengths >= 1) & (lengths <= 4)), lengths
        return

    def fn(q, v):
        out, weights = _forward(variant, layer, extra, q, v, qm, vm)
        return [out] if weights is None else [out, weights]

    results = [to_numpy(keras.ops.cast(t, "float32")) for t in fn(q, v)]
    out, weights = results[0], (results[1] if len(results) > 1 else None)
    assert np.all(np.isfinite(out)), f"{policy}: non-finite output"
    assert weights is None or np.all(np.isfinite(weights)), f"{policy}: non-finite weights"

    # 2. Exact zeros where the masks say so.
    if variant.style == "cell":
        visible = np.ones((b, tq, tv), bool) if vm is None else np.repeat(vm[:, None], tq, 1)
    elif variant.style == "pool":
        visible = np.ones((b, 1, tv), bool) if vm is None else vm[:, None, :]  # (B, 1, T)
    else:
        visible = _visible(variant, b, tq, tv, qm, vm)
    if weights is not None:
        hidden = ~visible[:, 0] if variant.style == "pool" else ~visible
        if weights.ndim == hidden.ndim + 1:  # (B, H, Tq, Tv)
            hidden = hidden[:, None]
        assert np.all(weights[np.broadcast_to(hidden, weights.shape)] == 0), (
            "weight on a masked key"
        )
    empty = ~visible.any(-1)  # (B, Tq) or, pooling, (B, 1): nothing to attend to
    if variant.style == "pool":
        empty = empty[:, 0]
    if variant.style == "qv":  # the output projection of a zero context: its bias
        bias = _weights(layer).get("attention_output/bias", 0.0)
        assert np.all(out[empty] == np.float32(bias)), "padded query: output != bias"
    elif variant.context:
        assert np.all(out[empty] == 0), "non-zero output for a query with no visible key"

    # 4. The float64 reference (float32 only).
    if policy == "float32" and variant.reference is not None:
        _check_reference(variant, layer, q, v, visible, out, weights)

    # 3. Finite gradients.
    rng = np.random.default_rng(problem.seed + 1)
    qmax, vmax = float(np.abs(q).max()), float(np.abs(v).max())
    shrink = 1.0 / max(1.0, qmax * vmax, vmax * vmax)
    cotangents = [(rng.normal(size=r.shape) * shrink).astype("float32") for r in results]
    grads = _gradients(fn, [q, v], _variables(layer, extra), cotangents)
    finite = [bool(np.all(np.isfinite(g))) for g in grads]
    if policy == "float32":
        assert all(finite), f"float32: non-finite gradients ({finite})"
        return
    if all(finite):
        return
    twin, twin_extra = _build(variant, "float32")

    def fn32(q, v):
        out, weights = _forward(variant, twin, twin_extra, q, v, qm, vm)
        return [out] if weights is None else [out, weights]

    fn32(q, v)  # builds the twin
    twin_extra.get("rnn", twin).set_weights(extra.get("rnn", layer).get_weights())
    grads32 = _gradients(fn32, [q, v], _variables(twin, twin_extra), cotangents)
    largest = max(float(np.abs(g).max()) for g in grads32)
    half_max = 65504.0 / 16 if policy == "mixed_float16" else 3.4e38 / 16
    assert largest > half_max, (
        f"{policy}: non-finite gradients ({finite}) where float32's are at most {largest:.3g}"
    )


def teardown_module(module):
    print(f"\nhypothesis layer examples run in {module.__name__}: {EXAMPLES['count']}")
    log = os.environ.get("ATTNKIT_FUZZ_LOG")
    if log:  # `make fuzz` sums the backends' counts
        with open(log, "a") as f:
            f.write(f"layers {keras.backend.backend()} {EXAMPLES['count']}\n")
