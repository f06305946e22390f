"""Transformer-era options of MultiHeadAttention and GroupedQueryAttention.

Each option (and their combination) against a float64 NumPy reference of the
whole layer: the projections with the layer's own weights, the option, the
softmax, the output projection. Gradients are compared with central finite
differences of that reference (float64, step 1e-6). Then: cached decoding
equals the whole-sequence causal call, configs and .keras files round-trip
(also across backends), the layer contract, attention maps, hooks, errors.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import attnkit
from attnkit.layers import GroupedQueryAttention, MultiHeadAttention
from attnkit.testing import run_layer_contract
from attnkit.testing.mods_reference import reference_alibi_slopes, reference_t5_bucket
from attnkit.testing.reference import reference_masked_softmax

B, T, DQ, H, HKV, DK = 2, 6, 8, 4, 2, 4
NB, MD = 8, 16  # T5 buckets and max distance, small enough for T
SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "portability_load.py")
SEGMENTS = np.array([[0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 1, 1]], dtype="int32")


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# The float64 reference of the whole layer ---------------------------------------


def reference_layer(
    weights,
    xq,
    xkv,
    *,
    causal,
    config,
    segment_ids=None,
    score_mod=None,
    mask_mod=None,
):
    """Output (B, Tq, Dout) and weights (B, H, Tq, Tv) of the layer, float64.

    ``weights`` maps role -> array: wq, bq, wk, bk, wv, bv, wo, bo, and with
    the options t5 (NB, H), sinks (H,). Query i sits at key position i.
    ``score_mod``/``mask_mod`` are NumPy functions of (s, h, i, j) / (i, j).
    """
    w = {name: np.asarray(a, dtype=np.float64) for name, a in weights.items()}
    xq, xkv = np.asarray(xq, np.float64), np.asarray(xkv, np.float64)
    q = np.einsum("btd,dhk->bthk", xq, w["wq"]) + w["bq"]  # (B, Tq, H, Dk)
    k = np.einsum("btd,dhk->bthk", xkv, w["wk"]) + w["bk"]  # (B, Tv, Hkv, Dk)
    v = np.einsum("btd,dhk->bthk", xkv, w["wv"]) + w["bv"]
    if config.get("qk_norm") is not None:
        q = _float64_op("qk_norm", q, w["query_norm"], config)
        k = _float64_op("qk_norm", k, w["key_norm"], config)
    if config.get("position_embedding") is not None:
        q = _float64_op("rotary", q, None, config)
        k = _float64_op("rotary", k, None, config)
    heads, kv_heads = q.shape[2], k.shape[2]
    kh = np.repeat(k, heads // kv_heads, axis=2)  # query head h reads kv head h // G
    vh = np.repeat(v, heads // kv_heads, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, kh) / np.sqrt(q.shape[-1])  # (B, H, Tq, Tv)
    tq, tv = s.shape[2], s.shape[3]
    i, j = np.arange(tq)[:, None], np.arange(tv)[None, :]
    if config.get("position_bias") == "alibi":
        s = s - reference_alibi_slopes(heads)[:, None, None] * np.abs(i - j)
    if config.get("position_bias") == "t5":
        bidirectional = config.get("t5_bidirectional")
        bidirectional = (not causal) if bidirectional is None else bidirectional
        bucket = reference_t5_bucket(
            j - i, config["t5_num_buckets"], config["t5_max_distance"], bidirectional
        )
        s = s + np.moveaxis(w["t5"][bucket], -1, 0)  # (H, Tq, Tv)
    if score_mod is not None:
        s = score_mod(s, np.arange(heads)[:, None, None], i, j)
    cap = config.get("logit_soft_cap")
    if cap is not None:
        s = cap * np.tanh(s / cap)
    mask = np.ones((1, 1, tq, tv), dtype=bool)
    if causal:
        mask = mask & (j <= i)
    window, sinks = config.get("sliding_window"), config.get("attention_sinks")
    if window is not None:
        mask = mask & ((np.abs(i - j) < window) | (j < (sinks or 0)))
    if segment_ids is not None:
        seg = np.asarray(segment_ids)
        mask = mask & (seg[:, None, :tq, None] == seg[:, None, None, :])
    if mask_mod is not None:
        mask = mask & mask_mod(i, j)
    mask = np.broadcast_to(mask, s.shape)
    if config.get("learned_sinks"):
        sink = np.broadcast_to(w["sinks"][None, :, None, None], (*s.shape[:3], 1))
        full = np.concatenate([s, sink], axis=-1)
        full_mask = np.concatenate([mask, np.ones(sink.shape, bool)], axis=-1)
        p = reference_masked_softmax(full, full_mask)[..., :-1]
        p = np.where(mask.any(-1, keepdims=True), p, 0.0)  # nothing visible: zeros
    else:
        p = reference_masked_softmax(s, mask)
    o = np.einsum("bhqk,bkhd->bqhd", p, vh)  # (B, Tq, H, Dv)
    out = np.einsum("bqhd,hdo->bqo", o, w["wo"]) + w["bo"]
    return out, p


def _float64_op(name, x, scale, config):
    """QK-norm and rotary of the reference, in float64 from the equations.

    ``"rms"``: ``g * x / sqrt(mean(x^2) + eps)``; ``"l2"``: ``g * x / ||x||``
    (where the epsilon goes matters far below the tolerance here). Rotary:
    token t at position t, pairs (x_m, x_{m + r/2}) of the first r =
    ``rotary_dim`` features rotated by ``t * base^(-2m / r)`` (half-split,
    the default), or pairs (x_2m, x_2m+1) when ``interleaved``.
    """
    x = np.asarray(x, np.float64)
    if name == "qk_norm":
        eps = config.get("qk_norm_epsilon", 1e-6)
        if config["qk_norm"] == "rms":
            return scale * x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)
        return scale * x / np.sqrt(np.sum(x * x, -1, keepdims=True) + eps)
    settings = config["position_embedding"]
    settings = {} if settings == "rotary" else settings
    d = x.shape[-1]
    r = settings.get("rotary_dim") or d
    base = settings.get("max_wavelength", 10000.0)
    theta = base ** (-2.0 * np.arange(r // 2) / r)  # (r/2,)
    angle = np.arange(x.shape[1])[:, None] * theta[None]  # (T, r/2)
    cos, sin = np.cos(angle)[None, :, None], np.sin(angle)[None, :, None]
    if settings.get("interleaved"):
        a, b = x[..., 0:r:2], x[..., 1:r:2]
        rotated = np.stack([a * cos - b * sin, b * cos + a * sin], -1).reshape(*x.shape[:-1], r)
    else:
        a, b = x[..., : r // 2], x[..., r // 2 : r]
        rotated = np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)
    return np.concatenate([rotated, x[..., r:]], -1)


def layer_weights(layer):
    """role -> variable of the layer."""
    roles = {
        "wq": layer.query_dense.kernel,
        "bq": layer.query_dense.bias,
        "wk": layer.key_dense.kernel,
        "bk": layer.key_dense.bias,
        "wv": layer.value_dense.kernel,
        "bv": layer.value_dense.bias,
        "wo": layer.output_dense.kernel,
        "bo": layer.output_dense.bias,
    }
    if layer._t5_table is not None:
        roles["t5"] = layer._t5_table
    if layer._sinks is not None:
        roles["sinks"] = layer._sinks
    if layer._query_norm is not None:
        roles["query_norm"] = layer._query_norm
        roles["key_norm"] = layer._key_norm
    return roles


def randomise(layer, seed=1):
    """Random values for every weight (biases, T5 table and sinks start at zero)."""
    rng = np.random.default_rng(seed)
    for var in layer.trainable_variables:
        value = rng.normal(scale=0.5, size=var.shape)
        if var.path.endswith("_norm"):  # QK-norm scales near their initial ones
            value = 1.0 + 0.4 * value
        var.assign(value.astype("float32"))


def data(seed=0, t=T):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, t, DQ)).astype("float32")


def make_layer(cls, config, x, **call_kwargs):
    if cls is GroupedQueryAttention:
        layer = cls(head_dim=DK, num_query_heads=H, num_key_value_heads=HKV, **config)
    else:
        layer = cls(num_heads=H, key_dim=DK, num_key_value_heads=HKV, **config)
    layer(x, x, **call_kwargs)
    randomise(layer)
    return layer


def numeric_gradients(loss, weights, eps=1e-6):
    """Central differences of ``loss(weights)`` for every entry of every weight."""
    grads = {}
    for name, value in weights.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = dict(weights), dict(weights)
            plus[name] = value.copy()
            plus[name][idx] += eps
            minus[name] = value.copy()
            minus[name][idx] -= eps
            g[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        grads[name] = g
    return grads


def layer_gradients(layer, loss_fn):
    """{variable path: gradient of loss_fn()} on the current backend."""
    variables = layer.trainable_variables
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def stateless(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return loss_fn()

        grads = jax.grad(stateless)([v.value for v in variables])
    elif backend == "torch":
        for v in variables:
            v.value.grad = None
        loss_fn().backward()
        grads = [v.value.grad for v in variables]
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_fn()
        grads = tape.gradient(value, [v.value for v in variables])
    return {
        v.path: np.zeros(v.shape) if g is None else to_numpy(g)
        for v, g in zip(variables, grads, strict=True)
    }


# Options one by one and combined -------------------------------------------------

CONFIGS = {
    "alibi": {"position_bias": "alibi"},
    "t5": {"position_bias": "t5", "t5_num_buckets": NB, "t5_max_distance": MD},
    "t5_bidirectional": {
        "position_bias": "t5",
        "t5_num_buckets": NB,
        "t5_max_distance": MD,
        "t5_bidirectional": True,
    },
    "soft_cap": {"logit_soft_cap": 1.5},
    "window_sinks": {"sliding_window": 3, "attention_sinks": 2},
    "learned_sinks": {"learned_sinks": True},
    "combined": {
        "sliding_window": 3,
        "attention_sinks": 1,
        "logit_soft_cap": 2.0,
        "learned_sinks": True,
        "position_bias": "t5",
        "t5_num_buckets": NB,
        "t5_max_distance": MD,
    },
}
CASES = [
    ("alibi", True, False),
    ("alibi", False, True),  # ALiBi + packed documents
    ("t5", True, False),
    ("t5", False, False),  # bidirectional because not causal
    ("t5_bidirectional", True, False),
    ("soft_cap", True, False),
    ("window_sinks", True, False),
    ("window_sinks", False, True),
    ("learned_sinks", True, False),
    ("learned_sinks", False, True),
    ("combined", True, True),
]


def _reference_weights(layer):
    return {role: to_numpy(var).astype(np.float64) for role, var in layer_weights(layer).items()}


@pytest.mark.parametrize("cls", [MultiHeadAttention, GroupedQueryAttention])
@pytest.mark.parametrize("name,causal,segments", CASES)
def test_forward_matches_the_float64_reference(cls, name, causal, segments):
    x = data()
    config = CONFIGS[name]
    kwargs = {"use_causal_mask": causal}
    if segments:
        kwargs["segment_ids"] = SEGMENTS
    layer = make_layer(cls, config, x, **kwargs)
    out, scores = layer(x, x, return_attention_scores=True, **kwargs)
    want_out, want_scores = reference_layer(
        _reference_weights(layer),
        x,
        x,
        causal=causal,
        config=config,
        segment_ids=SEGMENTS if segments else None,
    )
    np.testing.assert_allclose(to_numpy(scores), want_scores, atol=2e-6)
    np.testing.assert_allclose(to_numpy(out), want_out, atol=2e-5, rtol=1e-5)
    if config.get("learned_sinks"):  # the sink takes part of every row
        assert np.all(to_numpy(scores).sum(-1) < 1.0 - 1e-3)


@pytest.mark.parametrize("name,causal,segments", [c for c in CASES if c[0] != "t5_bidirectional"])
def test_gradients_match_the_float64_reference(name, causal, segments):
    x = data()
    config = CONFIGS[name]
    kwargs = {"use_causal_mask": causal}
    if segments:
        kwargs["segment_ids"] = SEGMENTS
    layer = make_layer(MultiHeadAttention, config, x, **kwargs)
    cotangent = np.random.default_rng(5).normal(size=(B, T, DQ))
    segment_ids = SEGMENTS if segments else None

    def loss_fn():
        out = layer(x, x, **kwargs)
        return keras.ops.sum(out * keras.ops.convert_to_tensor(cotangent, out.dtype))

    def reference_loss(weights):
        out, _ = reference_layer(
            weights, x, x, causal=causal, config=config, segment_ids=segment_ids
        )
        return float(np.sum(out * cotangent))

    got = layer_gradients(layer, loss_fn)
    want = numeric_gradients(reference_loss, _reference_weights(layer))
    for role, var in layer_weights(layer).items():
        if role != "bk":  # the key bias adds q·b_k to a whole row: no gradient
            assert np.abs(want[role]).max() > 1e-4, f"{role}: the reference gradient is ~0"
        np.testing.assert_allclose(got[var.path], want[role], atol=2e-4, rtol=1e-3, err_msg=role)


def test_user_score_mod_and_mask_mod_compose_with_the_options():
    x = data()
    config = CONFIGS["combined"]
    layer = make_layer(MultiHeadAttention, config, x, use_causal_mask=True)

    def score_mod(score, batch, head, q_idx, kv_idx):
        return (
            score
            + 0.1 * keras.ops.cast(head, score.dtype)
            - 0.05 * keras.ops.cast(q_idx - kv_idx, score.dtype)
        )

    def mask_mod(batch, head, q_idx, kv_idx):
        return keras.ops.logical_not(keras.ops.logical_and(q_idx == 4, kv_idx == 3))

    out, scores = layer(
        x,
        x,
        use_causal_mask=True,
        segment_ids=SEGMENTS,
        score_mod=score_mod,
        mask_mod=mask_mod,
        return_attention_scores=True,
    )
    want_out, want_scores = reference_layer(
        _reference_weights(layer),
        x,
        x,
        causal=True,
        config=config,
        segment_ids=SEGMENTS,
        score_mod=lambda s, h, i, j: s + 0.1 * h - 0.05 * (i - j),
        mask_mod=lambda i, j: ~((i == 4) & (j == 3)),
    )
    np.testing.assert_allclose(to_numpy(scores), want_scores, atol=2e-6)
    np.testing.assert_allclose(to_numpy(out), want_out, atol=2e-5, rtol=1e-5)
    assert np.all(to_numpy(scores)[:, :, 4, 3] == 0.0)


def test_chunked_implementation_gives_the_same_layer():
    x = data()
    config = CONFIGS["combined"]
    naive = make_layer(MultiHeadAttention, config, x, use_causal_mask=True)
    chunked = MultiHeadAttention(
        num_heads=H, key_dim=DK, num_key_value_heads=HKV, implementation="chunked", **config
    )
    chunked(x, x)
    chunked.set_weights(naive.get_weights())
    kwargs = {"use_causal_mask": True, "segment_ids": SEGMENTS}
    np.testing.assert_allclose(
        to_numpy(chunked(x, x, **kwargs)), to_numpy(naive(x, x, **kwargs)), atol=1e-5
    )


# Cached decoding == the whole-sequence causal call --------------------------------


def _decode(layer, x, chunks, segment_ids=None):
    cache = np.zeros((B, 2, x.shape[1], HKV, DK), "float32")
    outs, start = [], 0
    for size in chunks:
        piece = x[:, start : start + size]
        kwargs = {} if segment_ids is None else {"segment_ids": segment_ids}
        out, cache = layer(
            piece, piece, cache=cache, cache_update_index=start, use_causal_mask=True, **kwargs
        )
        outs.append(to_numpy(out))
        start += size
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize("cls", [MultiHeadAttention, GroupedQueryAttention])
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("chunks", [(1,) * T, (2, 3, 1)])
def test_cached_decoding_equals_the_whole_sequence(cls, name, chunks):
    x = data()
    layer = make_layer(cls, CONFIGS[name], x, use_causal_mask=True)
    whole = to_numpy(layer(x, x, use_causal_mask=True, segment_ids=SEGMENTS))
    steps = _decode(layer, x, chunks, segment_ids=SEGMENTS)
    np.testing.assert_allclose(steps, whole, atol=1e-5)


@pytest.mark.parametrize("name", ["combined", "everything"])
def test_cached_decoding_with_a_tensor_index(name):
    config = {**CONFIGS, **POSITION_CONFIGS}[name]
    x = data()
    layer = make_layer(MultiHeadAttention, config, x, use_causal_mask=True)
    whole = to_numpy(layer(x, x, use_causal_mask=True))
    cache = keras.ops.zeros((B, 2, T, HKV, DK))
    outs = []
    for t in range(T):
        out, cache = layer(
            x[:, t : t + 1],
            x[:, t : t + 1],
            cache=cache,
            cache_update_index=keras.ops.convert_to_tensor(t, "int32"),
            use_causal_mask=True,
        )
        outs.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(outs, 1), whole, atol=1e-5)


# Serialization ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MultiHeadAttention, GroupedQueryAttention])
def test_config_round_trip(cls):
    x = data()
    layer = make_layer(cls, CONFIGS["combined"], x, use_causal_mask=True)
    config = layer.get_config()
    for name, value in CONFIGS["combined"].items():
        assert config[name] == value, name
    clone = cls.from_config(config)
    clone(x, x)
    clone.set_weights(layer.get_weights())
    kwargs = {"use_causal_mask": True, "segment_ids": SEGMENTS}
    np.testing.assert_allclose(to_numpy(clone(x, x, **kwargs)), to_numpy(layer(x, x, **kwargs)))
    assert clone.get_config() == config


def _model(cls, config, seed=0):
    inputs = keras.Input((T, DQ))
    if cls is GroupedQueryAttention:
        layer = cls(head_dim=DK, num_query_heads=H, num_key_value_heads=HKV, name="attn", **config)
    else:
        layer = cls(num_heads=H, key_dim=DK, num_key_value_heads=HKV, name="attn", **config)
    model = keras.Model(inputs, layer(inputs, inputs, use_causal_mask=True))
    randomise(layer, seed)
    return model


@pytest.mark.parametrize("cls", [MultiHeadAttention, GroupedQueryAttention])
def test_keras_file_round_trip(cls, tmp_path):
    x = data()
    model = _model(cls, CONFIGS["combined"])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)


def test_saved_models_load_under_other_backends(next_backend, tmp_path):
    """Saved here, loaded under the next backend of conftest's cycle."""
    target = next_backend
    x = data()
    for i, (cls, name) in enumerate(
        [
            (MultiHeadAttention, "combined"),
            (GroupedQueryAttention, "combined"),
            (MultiHeadAttention, "alibi"),
        ]
    ):
        model = _model(cls, CONFIGS[name], seed=i)
        model.save(tmp_path / f"{cls.__name__}_{name}.keras")
        np.savez(tmp_path / f"{cls.__name__}_{name}.npz", x0=x, y0=to_numpy(model(x)))
    env = dict(os.environ, KERAS_BACKEND=target, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 3
    bad = {n: r for n, r in results.items() if isinstance(r, str) or r > 1e-5}
    assert not bad, f"{keras.backend.backend()} -> {target}: {bad}"


# The layer contract and attention maps ---------------------------------------------


@pytest.mark.parametrize("cls", [MultiHeadAttention, GroupedQueryAttention])
def test_layer_contract_with_the_combined_options(cls):
    if cls is GroupedQueryAttention:
        init = {"head_dim": 4, "num_query_heads": 4, "num_key_value_heads": 2}
    else:
        init = {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2}
    run_layer_contract(
        cls,
        {**init, **CONFIGS["combined"]},
        [(2, 5, 8), (2, 7, 8)],
        call_style="qv",
        call_kwargs={"use_causal_mask": True},
        expected_output_shape=(2, 5, 8),
        expected_scores_shape=(2, 4, 5, 7),
        mask_input=0,
        expected_num_trainable_weights=10,  # 8 of Keras' + T5 table + sinks
        expected_num_non_trainable_weights=0,
        expected_num_seed_generators=0,
    )


def test_attention_maps_return_the_weights_of_a_layer_with_options():
    x = data()
    model = _model(MultiHeadAttention, CONFIGS["combined"])
    maps = attnkit.attention_maps(model, x)
    layer = model.get_layer("attn")
    _, scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    assert list(maps) == ["attn"]
    np.testing.assert_allclose(maps["attn"], to_numpy(scores), atol=1e-6)
    _, want = reference_layer(
        _reference_weights(layer), x, x, causal=True, config=CONFIGS["combined"]
    )
    np.testing.assert_allclose(maps["attn"], want, atol=2e-6)


# Options off: Keras parity, and subclass hooks --------------------------------------


def test_options_off_add_no_weights_and_keep_keras_weight_order():
    x = data()
    ours = MultiHeadAttention(num_heads=H, key_dim=DK)
    keras_layer = keras.layers.MultiHeadAttention(num_heads=H, key_dim=DK)
    keras_layer(x, x)
    ours(x, x)
    assert len(ours.weights) == len(keras_layer.weights) == 8
    ours.set_weights(keras_layer.get_weights())
    np.testing.assert_allclose(to_numpy(ours(x, x)), to_numpy(keras_layer(x, x)), atol=1e-5)


class _OwnAttention(MultiHeadAttention):
    """Overrides Keras' hook: every constraint arrives in ``attention_mask``."""

    def _compute_attention(self, query, key, value, attention_mask=None, training=None):
        return super()._compute_attention(query, key, value, attention_mask, training)


class _OwnSoftmax(MultiHeadAttention):
    def _masked_softmax(self, attention_scores, attention_mask=None):
        return super()._masked_softmax(attention_scores, attention_mask)


@pytest.mark.parametrize("subclass", [_OwnAttention, _OwnSoftmax])
def test_mask_options_reach_an_overridden_hook(subclass):
    x = data()
    config = CONFIGS["window_sinks"]
    layer = make_layer(MultiHeadAttention, config, x)
    hooked = subclass(num_heads=H, key_dim=DK, num_key_value_heads=HKV, **config)
    hooked(x, x)
    hooked.set_weights(layer.get_weights())

    def mask_mod(batch, head, q_idx, kv_idx):
        return kv_idx != 1

    kwargs = {"use_causal_mask": True, "segment_ids": SEGMENTS, "mask_mod": mask_mod}
    np.testing.assert_allclose(
        to_numpy(hooked(x, x, **kwargs)), to_numpy(layer(x, x, **kwargs)), atol=1e-6
    )
    # and with the cache
    whole = to_numpy(layer(x, x, use_causal_mask=True, segment_ids=SEGMENTS))
    np.testing.assert_allclose(_decode(hooked, x, (2, 3, 1), SEGMENTS), whole, atol=1e-5)


@pytest.mark.parametrize("subclass", [_OwnAttention, _OwnSoftmax])
@pytest.mark.parametrize(
    "config,call,match",
    [
        ({"position_bias": "alibi"}, {}, r"position_bias='alibi'"),
        ({"logit_soft_cap": 3.0}, {}, r"logit_soft_cap=3.0"),
        ({"learned_sinks": True}, {}, r"learned_sinks=True|sinks="),
        ({}, {"score_mod": lambda s, b, h, q, k: s}, r"score_mod="),
    ],
)
def test_score_options_refuse_an_overridden_hook(subclass, config, call, match):
    x = data()
    layer = subclass(num_heads=H, key_dim=DK, **config)
    hook = "_compute_attention" if subclass is _OwnAttention else "_masked_softmax"
    with pytest.raises(ValueError, match=rf"overrides `{hook}`.*Received: .*(?:{match})"):
        layer(x, x, **call)


# Errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"position_bias": "rope"}, r"position_bias.*Received: position_bias='rope'"),
        ({"position_bias": "t5", "t5_num_buckets": 3}, r"Received: t5_num_buckets=3"),
        ({"position_bias": "t5", "t5_num_buckets": 0}, r"Received: t5_num_buckets=0"),
        ({"t5_num_buckets": 8, "t5_max_distance": 4}, r"Received: t5_max_distance=4"),
        ({"t5_bidirectional": "yes"}, r"Received: t5_bidirectional='yes'"),
        ({"logit_soft_cap": 0.0}, r"logit_soft_cap.*Received: logit_soft_cap=0.0"),
        ({"logit_soft_cap": -2.0}, r"Received: logit_soft_cap=-2.0"),
        ({"logit_soft_cap": float("inf")}, r"Received: logit_soft_cap=inf"),
        ({"attention_sinks": 2}, r"needs `sliding_window`.*Received: attention_sinks=2"),
        ({"attention_sinks": 4, "sliding_window": 4}, r"smaller than sliding_window=4"),
        ({"attention_sinks": 0, "sliding_window": 4}, r"Received: attention_sinks=0"),
        ({"learned_sinks": 1}, r"Received: learned_sinks=1"),
        ({"qk_norm": "layer"}, r"qk_norm.*Received: qk_norm='layer'"),
        ({"qk_norm": None, "qk_norm_epsilon": 0}, r"Received: qk_norm_epsilon=0"),
        ({"position_embedding": "alibi"}, r"Received: position_embedding='alibi'"),
        (
            {"position_bias": "alibi", "implementation": "fused"},
            r"fused kernel.*Received: implementation='fused'",
        ),
        (
            {"logit_soft_cap": 5.0, "flash_attention": True},
            r"Received: .*flash_attention=True.*logit_soft_cap=5.0",
        ),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(num_heads=H, key_dim=DK, **kwargs)


def test_gqa_constructor_errors_name_the_option():
    with pytest.raises(ValueError, match=r"Received: position_bias='relative'"):
        GroupedQueryAttention(
            head_dim=4, num_query_heads=4, num_key_value_heads=2, position_bias="relative"
        )


@pytest.mark.parametrize(
    "segment_ids,match",
    [
        (SEGMENTS.astype("float32"), r"segment_ids.*integer.*Received: segment_ids.dtype=float32"),
        (SEGMENTS.astype(bool), r"Received: segment_ids.dtype=bool"),
        (SEGMENTS[:, :4], r"shape \(B, T\) = \(2, 6\). Received: segment_ids.shape=\(2, 4\)"),
        (SEGMENTS[None], r"Received: segment_ids.shape=\(1, 2, 6\)"),
        (np.zeros((3, T), "int32"), r"Received: segment_ids.shape=\(3, 6\)"),
    ],
)
def test_segment_ids_errors(segment_ids, match):
    x = data()
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    with pytest.raises(ValueError, match=match):
        layer(x, x, segment_ids=segment_ids)


def test_segment_ids_need_self_attention_or_a_cache():
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    with pytest.raises(ValueError, match=r"Tq == Tv.*query length 6 and key length 4"):
        layer(data(), data(t=4), segment_ids=SEGMENTS)
    cache = np.zeros((B, 2, 8, H, DK), "float32")
    with pytest.raises(ValueError, match=r"\(B, S\) = \(2, 8\). Received: segment_ids.shape"):
        layer(data(t=1), data(t=1), cache=cache, cache_update_index=0, segment_ids=SEGMENTS)


def test_call_mod_errors():
    x = data()
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    with pytest.raises(ValueError, match=r"`score_mod` must be a callable.*Received: score_mod=3"):
        layer(x, x, score_mod=3)
    with pytest.raises(ValueError, match=r"`mask_mod` must be a callable.*Received: mask_mod='x'"):
        layer(x, x, mask_mod="x")
    with pytest.raises(ValueError, match=r"score_mod.*Received: score_mod taking 1 params"):
        layer(x, x, score_mod=lambda s, b, h, q, k, table: s)


def test_chunked_gradients_equal_the_naive_ones():
    # The chunked path's own backward (tf.custom_gradient, jax.custom_vjp) must
    # reach the T5 table and the sinks too.
    x = data()
    config = CONFIGS["combined"]
    naive = make_layer(MultiHeadAttention, config, x, use_causal_mask=True)
    chunked = MultiHeadAttention(
        num_heads=H, key_dim=DK, num_key_value_heads=HKV, implementation="chunked", **config
    )
    chunked(x, x)
    chunked.set_weights(naive.get_weights())
    cotangent = np.random.default_rng(5).normal(size=(B, T, DQ)).astype("float32")

    def loss_of(layer):
        def loss_fn():
            out = layer(x, x, use_causal_mask=True, segment_ids=SEGMENTS)
            return keras.ops.sum(out * keras.ops.convert_to_tensor(cotangent))

        return loss_fn

    want = list(layer_gradients(naive, loss_of(naive)).values())
    got = list(layer_gradients(chunked, loss_of(chunked)).values())
    for g, w, var in zip(got, want, naive.trainable_variables, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4, err_msg=var.path)


# QK-norm and rotary (attnkit.ops.positions) ----------------------------------------

POSITION_CONFIGS = {
    "rotary": {"position_embedding": "rotary"},
    "rotary_partial": {"position_embedding": {"rotary_dim": 2, "max_wavelength": 100.0}},
    "rotary_interleaved": {"position_embedding": {"interleaved": True}},
    "qk_norm_rms": {"qk_norm": "rms"},
    "qk_norm_l2": {"qk_norm": "l2"},
    # rotary + GQA (HKV < H) + sliding window + sinks + soft cap + learned sinks
    "everything": {
        "position_embedding": "rotary",
        "qk_norm": "rms",
        "sliding_window": 3,
        "attention_sinks": 1,
        "logit_soft_cap": 2.0,
        "learned_sinks": True,
    },
}


@pytest.mark.parametrize("cls", [MultiHeadAttention, GroupedQueryAttention])
@pytest.mark.parametrize("name", sorted(POSITION_CONFIGS))
@pytest.mark.parametrize("causal", [True, False])
def test_position_options_match_the_reference(cls, name, causal):
    x = data()
    config = POSITION_CONFIGS[name]
    layer = make_layer(cls, config, x, use_causal_mask=causal)
    out, scores = layer(x, x, use_causal_mask=causal, return_attention_scores=True)
    want_out, want_scores = reference_layer(
        _reference_weights(layer), x, x, causal=causal, config=config
    )
    np.testing.assert_allclose(to_numpy(scores), want_scores, atol=2e-6)
    np.testing.assert_allclose(to_numpy(out), want_out, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(POSITION_CONFIGS))
def test_position_options_gradients(name):
    x = data()
    config = POSITION_CONFIGS[name]
    layer = make_layer(MultiHeadAttention, config, x, use_causal_mask=True)
    cotangent = np.random.default_rng(5).normal(size=(B, T, DQ))

    def loss_fn():
        out = layer(x, x, use_causal_mask=True)
        return keras.ops.sum(out * keras.ops.convert_to_tensor(cotangent, out.dtype))

    def reference_loss(weights):
        out, _ = reference_layer(weights, x, x, causal=True, config=config)
        return float(np.sum(out * cotangent))

    got = layer_gradients(layer, loss_fn)
    want = numeric_gradients(reference_loss, _reference_weights(layer))
    for role, var in layer_weights(layer).items():
        np.testing.assert_allclose(got[var.path], want[role], atol=2e-4, rtol=1e-3, err_msg=role)


@pytest.mark.parametrize("cls", [MultiHeadAttention, GroupedQueryAttention])
@pytest.mark.parametrize("name", sorted(POSITION_CONFIGS))
@pytest.mark.parametrize("chunks", [(1,) * T, (2, 3, 1)])
def test_position_options_cached_decoding(cls, name, chunks):
    x = data()
    layer = make_layer(cls, POSITION_CONFIGS[name], x, use_causal_mask=True)
    whole = to_numpy(layer(x, x, use_causal_mask=True, segment_ids=SEGMENTS))
    np.testing.assert_allclose(_decode(layer, x, chunks, SEGMENTS), whole, atol=1e-5)


def test_position_options_contract_and_round_trip(tmp_path):
    config = POSITION_CONFIGS["everything"]
    run_layer_contract(
        GroupedQueryAttention,
        {"head_dim": 4, "num_query_heads": 4, "num_key_value_heads": 2, **config},
        [(2, 5, 8), (2, 7, 8)],
        call_style="qv",
        call_kwargs={"use_causal_mask": True},
        expected_output_shape=(2, 5, 8),
        expected_scores_shape=(2, 4, 5, 7),
        mask_input=0,
        expected_num_trainable_weights=11,  # 8 of Keras' + sinks + two norm scales
        expected_num_non_trainable_weights=0,
        expected_num_seed_generators=0,
    )
    x = data()
    model = _model(MultiHeadAttention, config)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)


@pytest.mark.parametrize(
    "setting,match",
    [
        ({"rotary_dim": 3}, r"even int from 2 to key_dim=4"),
        ({"rotary_dim": 8}, r"even int from 2 to key_dim=4"),
        ({"base": 10.0}, r"unknown: \['base'\]"),
        ({"offset": 2}, r"unknown: \['offset'\]"),
        ({"sequence_axis": 2}, r"unknown: \['sequence_axis'\]"),
        ({"scaling": "dynamic"}, r"do not suit attnkit.ops.rotary"),
        ({"max_wavelength": -1.0}, r"do not suit attnkit.ops.rotary"),
    ],
)
def test_position_embedding_errors(setting, match):
    with pytest.raises(ValueError, match=rf"position_embedding.*{match}"):
        MultiHeadAttention(num_heads=H, key_dim=DK, position_embedding=setting)
