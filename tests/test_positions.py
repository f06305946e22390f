"""attnkit.ops.positions and its layers against float64 references and keras-hub.

Rotary: every scaling, pairing and partial rotation against
``attnkit.testing.positions_reference`` (forward and the gradient w.r.t. x
on this backend's autodiff); the relative-position property; offsets equal
slices of the whole sequence; half precision; keras-hub's layers for the
settings both have. Sinusoidal encoding and QK-norm likewise; every bad
argument a ValueError naming it.
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from attnkit.layers import RotaryEmbedding, SinusoidalPositionEncoding
from attnkit.ops import backend, qk_norm, rotary, sinusoidal_position_encoding
from attnkit.testing import positions_reference as ref

B, T, H, D = 2, 9, 3, 8
# float32 angles p·θ with p < 16 and entries of order one: about 16 · 2^-24 each.
TOL = 2e-5

VARIANTS = {
    "default": {},
    "linear": {"scaling": "linear", "scaling_factor": 2.5},
    "ntk": {"scaling": "ntk", "scaling_factor": 3.0},
    "dynamic": {"scaling": "dynamic", "scaling_factor": 2.0, "original_max_position": 4},
    "dynamic_fixed": {
        "scaling": "dynamic",
        "scaling_factor": 2.0,
        "original_max_position": 4,
        "sequence_length": 32,
    },
    "yarn": {"scaling": "yarn", "scaling_factor": 4.0, "original_max_position": 16},
    "yarn_untruncated": {
        "scaling": "yarn",
        "scaling_factor": 4.0,
        "original_max_position": 16,
        "yarn_truncate": False,
        "beta_fast": 8.0,
    },
    "yarn_factor": {
        "scaling": "yarn",
        "scaling_factor": 8.0,
        "original_max_position": 64,
        "attention_factor": 1.0,
        "max_wavelength": 500.0,
    },
    "partial": {"rotary_dim": 4},
    "interleaved": {"interleaved": True},
    "partial_interleaved_yarn": {
        "rotary_dim": 6,
        "interleaved": True,
        "scaling": "yarn",
        "scaling_factor": 2.0,
        "original_max_position": 8,
    },
    "base": {"max_wavelength": 50.0},
}


def _expected(x, kwargs, positions, cotangent=None):
    """The reference rotary of (B, T, H, D) ``x`` at (B|1, T) ``positions``."""
    r = kwargs.get("rotary_dim") or x.shape[-1]
    settings = {
        k: v
        for k, v in kwargs.items()
        if k not in ("rotary_dim", "interleaved", "attention_factor", "sequence_length")
    }
    length = kwargs.get("sequence_length") or float(np.max(positions)) + 1
    theta = ref.reference_frequencies(r, length=length, **settings)
    magnitude = 1.0
    if kwargs.get("scaling") == "yarn":
        s = kwargs["scaling_factor"]
        magnitude = kwargs.get("attention_factor") or 0.1 * np.log(s) + 1
    out = np.asarray(x, np.float64).copy()
    src = out if cotangent is None else np.asarray(cotangent, np.float64).copy()
    rotated = ref.reference_rotary(
        x[..., :r],
        positions,
        theta,
        interleaved=kwargs.get("interleaved", False),
        magnitude=magnitude,
        cotangent=None if cotangent is None else cotangent[..., :r],
    )
    src[..., :r] = rotated
    return src


@pytest.fixture
def x(rng):
    return rng.normal(size=(B, T, H, D)).astype("float32")


# Forward and gradients against the reference ------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("where", ["default", "offset", "positions"])
def test_rotary_equals_reference(name, where, x, rng):
    kwargs = VARIANTS[name]
    call, positions = {}, np.arange(T)[None]
    if where == "offset":
        call, positions = {"offset": 5}, np.arange(T)[None] + 5
    elif where == "positions":
        positions = rng.integers(0, 14, size=(B, T))
        call = {"positions": positions.astype("int32")}
    got = to_numpy(rotary(x, **call, **kwargs))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _expected(x, kwargs, positions), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["default", "dynamic", "yarn", "partial_interleaved_yarn"])
def test_rotary_gradient_equals_reference(name, x, rng):
    kwargs = VARIANTS[name]
    g = rng.normal(size=x.shape).astype("float32")
    out, pullback = backend.vjp(lambda t: rotary(t, offset=2, **kwargs), ops_tensor(x))
    (grad,) = pullback(ops_tensor(g))
    positions = np.arange(T)[None] + 2
    np.testing.assert_allclose(to_numpy(out), _expected(x, kwargs, positions), atol=TOL)
    np.testing.assert_allclose(to_numpy(grad), _expected(x, kwargs, positions, g), atol=TOL)


def ops_tensor(a):
    return keras.ops.convert_to_tensor(a)


def test_the_reference_gradient_is_the_transposed_rotation(x, rng):
    """The reference's own check: <R x, g> == <x, Rᵀ g>."""
    g = rng.normal(size=x.shape)
    theta = ref.reference_frequencies(D)
    pos = np.arange(T)[None] + 3
    lhs = np.sum(ref.reference_rotary(x, pos, theta) * g)
    rhs = np.sum(x * ref.reference_rotary(x, pos, theta, cotangent=g))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_hand_values_of_one_pair():
    """D = 2: the pair (1, 0) at position p turns by p radians (θ_0 = 1)."""
    x = np.tile(np.array([1.0, 0.0], "float32"), (1, 4, 1))  # (1, T, D)
    got = to_numpy(rotary(x))
    p = np.arange(4)
    np.testing.assert_allclose(got[0], np.stack([np.cos(p), np.sin(p)], -1), atol=1e-6)


# Properties ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "interleaved", "partial", "linear", "yarn"])
def test_scores_depend_only_on_the_distance(name, rng):
    q = rng.normal(size=(1, 1, 1, D)).astype("float32")
    k = rng.normal(size=(1, 1, 1, D)).astype("float32")
    kwargs = VARIANTS[name]

    def score(i, j):
        qi = to_numpy(rotary(q, offset=i, **kwargs))
        kj = to_numpy(rotary(k, offset=j, **kwargs))
        return float(np.sum(qi * kj))

    for distance in (0, 3, -2):
        scores = [score(c + distance, c) for c in (0, 4, 11)]
        np.testing.assert_allclose(scores, scores[0], rtol=0, atol=1e-5)
    assert abs(score(3, 0) - score(0, 0)) > 1e-3  # and it does depend on the distance


@pytest.mark.parametrize("name", ["default", "yarn", "dynamic_fixed", "partial_interleaved_yarn"])
def test_offsets_equal_slices_of_the_whole_sequence(name, x):
    kwargs = VARIANTS[name]
    whole = to_numpy(rotary(x, **kwargs))
    for start in (0, 4, T - 1):
        step = to_numpy(rotary(x[:, start : start + 1], offset=start, **kwargs))
        np.testing.assert_allclose(step, whole[:, start : start + 1], atol=1e-6)
        tensor = keras.ops.convert_to_tensor(start, "int32")
        step = to_numpy(rotary(x[:, start:], offset=tensor, **kwargs))
        np.testing.assert_allclose(step, whole[:, start:], atol=1e-6)
    layer = RotaryEmbedding(**kwargs)
    np.testing.assert_allclose(to_numpy(layer(x[:, 4:], start_index=4)), whole[:, 4:], atol=1e-6)


def test_dynamic_ntk_depends_on_the_length_unless_it_is_fixed(x):
    """Beyond L0 a decoding step sees a shorter length than the whole call."""
    kwargs = VARIANTS["dynamic"]
    whole = to_numpy(rotary(x, **kwargs))
    step = to_numpy(rotary(x[:, 5:6], offset=5, **kwargs))  # L = 6, whole: L = 9
    assert np.max(np.abs(step - whole[:, 5:6])) > 1e-3
    # Up to L0 dynamic NTK is plain RoPE.
    np.testing.assert_allclose(
        to_numpy(rotary(x[:, :4], **kwargs)), to_numpy(rotary(x[:, :4])), atol=1e-6
    )
    fixed = {**kwargs, "sequence_length": T}
    np.testing.assert_allclose(
        to_numpy(rotary(x[:, 5:6], offset=5, **fixed)), whole[:, 5:6], atol=1e-6
    )


def test_the_scaling_factor_of_linear_scaling_divides_the_positions(x):
    scaled = to_numpy(rotary(x, positions=np.arange(T) * 2.0, scaling_factor=2.0))
    np.testing.assert_allclose(scaled, to_numpy(rotary(x)), atol=1e-5)


def test_yarn_scales_the_logits_by_the_square_of_its_factor(rng):
    q = rng.normal(size=(1, 1, 1, D)).astype("float32")
    kwargs = VARIANTS["yarn"]
    plain = {**kwargs, "attention_factor": 1.0}
    ratio = np.sum(to_numpy(rotary(q, **kwargs)) ** 2) / np.sum(to_numpy(rotary(q, **plain)) ** 2)
    np.testing.assert_allclose(ratio, (0.1 * np.log(4.0) + 1) ** 2, rtol=1e-5)


@pytest.mark.parametrize(
    "axes,perm", [((2, 3), (0, 2, 1, 3)), ((1, 2), (0, 1, 3, 2)), ((3, 1), (0, 3, 2, 1))]
)
def test_sequence_and_feature_axes(axes, perm, x):
    moved = np.transpose(x, perm)  # (B, T, H, D) -> the layout of `axes`
    got = to_numpy(rotary(moved, sequence_axis=axes[0], feature_axis=axes[1], rotary_dim=4))
    np.testing.assert_allclose(
        np.transpose(got, np.argsort(perm)), to_numpy(rotary(x, rotary_dim=4))
    )


def test_an_unbatched_input(x):
    np.testing.assert_allclose(
        to_numpy(rotary(x[0, :, 0], positions=np.arange(T), sequence_axis=0)),
        to_numpy(rotary(x))[0, :, 0],
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["default", "yarn", "dynamic"])
def test_half_precision_is_finite_and_accurate(dtype, name, rng):
    x = rng.normal(size=(B, 64, H, D)).astype("float32") * 100
    kwargs = VARIANTS[name]
    half = keras.ops.cast(x, dtype)
    got = rotary(half, offset=4000, **kwargs)
    assert keras.backend.standardize_dtype(got.dtype) == dtype
    got = to_numpy(keras.ops.cast(got, "float32"))
    assert np.all(np.isfinite(got))
    exact = _expected(to_numpy(keras.ops.cast(half, "float32")), kwargs, np.arange(64)[None] + 4000)
    eps = 2.0**-10 if dtype == "float16" else 2.0**-7
    # One rounding of the result, plus float32 angles of positions near 4000.
    atol = 1.5 * eps * np.abs(exact).max() + 4000 * 2.0**-23 * np.abs(exact).max()
    np.testing.assert_allclose(got, exact, rtol=0, atol=atol)


# Sinusoidal ---------------------------------------------------------------------


@pytest.mark.parametrize("dim,base", [(8, 10000.0), (7, 100.0), (1, 10.0)])
def test_sinusoidal_equals_reference(dim, base, rng):
    np.testing.assert_allclose(
        to_numpy(sinusoidal_position_encoding(T, dim, base)),
        ref.reference_sinusoidal(np.arange(T), dim, base),
        atol=1e-5,
    )
    pos = rng.integers(0, 50, size=(B, T))
    np.testing.assert_allclose(
        to_numpy(sinusoidal_position_encoding(pos, dim, base)),
        ref.reference_sinusoidal(pos, dim, base),
        atol=5e-5,
    )


def test_sinusoidal_layer_start_index_positions_and_dtype(rng):
    x = np.zeros((B, T, D), "float32")
    layer = SinusoidalPositionEncoding()
    np.testing.assert_allclose(
        to_numpy(layer(x, start_index=3)),
        np.broadcast_to(ref.reference_sinusoidal(np.arange(T) + 3, D), x.shape),
        atol=1e-5,
    )
    pos = rng.integers(0, 30, size=(B, T)).astype("int32")
    np.testing.assert_allclose(
        to_numpy(layer(x, positions=pos)), ref.reference_sinusoidal(pos, D), atol=5e-5
    )
    half = SinusoidalPositionEncoding(dtype="mixed_float16")(x, start_index=60000)
    assert keras.backend.standardize_dtype(half.dtype) == "float16"
    assert np.all(np.isfinite(to_numpy(half).astype("float32")))


# QK-norm ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rms", "l2"])
@pytest.mark.parametrize("with_scale", [False, True])
def test_qk_norm_forward_and_gradient_equal_reference(kind, with_scale, x, rng):
    x = x.copy()
    x[0, 0, 0] = 0.0  # a zero vector: zeros, finite gradient
    scale = rng.normal(size=(D,)).astype("float32") if with_scale else None
    g = rng.normal(size=x.shape).astype("float32")
    out, pullback = backend.vjp(lambda t: qk_norm(t, scale, kind=kind, epsilon=1e-6), ops_tensor(x))
    (grad,) = pullback(ops_tensor(g))
    np.testing.assert_allclose(to_numpy(out), ref.reference_qk_norm(x, scale, kind), atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(grad), ref.reference_qk_norm(x, scale, kind, cotangent=g), atol=1e-4, rtol=1e-4
    )
    assert np.all(to_numpy(out)[0, 0, 0] == 0)


@pytest.mark.parametrize("kind", ["rms", "l2"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_qk_norm_in_half_precision(kind, dtype, rng):
    x = rng.normal(size=(B, T, D)).astype("float32") * np.array([1e-4, 1.0, 6e4])[:, None, None][
        :B
    ].repeat(1, 0)
    x[1, 0] = 0
    out = qk_norm(keras.ops.cast(x, dtype), kind=kind)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    got = to_numpy(keras.ops.cast(out, "float32"))
    assert np.all(np.isfinite(got))
    exact = ref.reference_qk_norm(
        to_numpy(keras.ops.cast(keras.ops.cast(x, dtype), "float32")), kind=kind
    )
    eps = 2.0**-10 if dtype == "float16" else 2.0**-7
    np.testing.assert_allclose(got, exact, rtol=0, atol=2 * eps * max(1.0, np.abs(exact).max()))


# keras-hub -----------------------------------------------------------------------


KERAS_HUB_CASES = [
    ({}, {}),
    ({"scaling_factor": 4.0}, {"scaling_factor": 4.0}),
    ({"max_wavelength": 500.0}, {"max_wavelength": 500}),
    ({"sequence_axis": 2, "feature_axis": 3}, {"sequence_axis": 2, "feature_axis": 3}),
    (
        {"scaling": "yarn", "scaling_factor": 4.0, "original_max_position": 16},
        {"rope_type": "yarn", "scaling_factor": 4.0, "original_max_position_embeddings": 16},
    ),
]


@pytest.mark.parametrize("ours,theirs", KERAS_HUB_CASES)
def test_rotary_embedding_equals_keras_hub(ours, theirs, x, rng):
    keras_hub = pytest.importorskip("keras_hub")
    hub = keras_hub.layers.RotaryEmbedding(**theirs)
    mine = RotaryEmbedding(**ours)
    for call in (
        {},
        {"start_index": 7},
        {"positions": rng.integers(0, 20, size=(B, x.shape[ours.get("sequence_axis", 1)]))},
    ):
        np.testing.assert_allclose(to_numpy(mine(x, **call)), to_numpy(hub(x, **call)), atol=2e-5)


def test_sinusoidal_position_encoding_equals_keras_hub(rng):
    keras_hub = pytest.importorskip("keras_hub")
    x = rng.normal(size=(B, T, 6)).astype("float32")
    for base in (10000, 100):
        hub = keras_hub.layers.SinePositionEncoding(max_wavelength=base)
        mine = SinusoidalPositionEncoding(max_wavelength=base)
        for call in ({}, {"start_index": 5}):
            np.testing.assert_allclose(
                to_numpy(mine(x, **call)), to_numpy(hub(x, **call)), atol=2e-5
            )


def test_the_layer_round_trips_its_config_and_computes_the_same():
    layer = RotaryEmbedding(**VARIANTS["partial_interleaved_yarn"], name="rope")
    revived = RotaryEmbedding.from_config(layer.get_config())
    assert revived.get_config() == layer.get_config()
    x = np.random.default_rng(1).normal(size=(B, T, H, D)).astype("float32")
    np.testing.assert_array_equal(to_numpy(revived(x)), to_numpy(layer(x)))


# Errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"rotary_dim": 3}, r"`rotary_dim` must be even.*Received: rotary_dim=3"),
        (
            {"rotary_dim": 10},
            r"`rotary_dim` must be even and at most .* 8.*Received: rotary_dim=10",
        ),
        ({"rotary_dim": 0}, r"`rotary_dim` must be a positive integer.*Received: rotary_dim=0"),
        (
            {"scaling": "ntk-by-parts"},
            r"`scaling` must be one of .*Received: scaling='ntk-by-parts'",
        ),
        (
            {"scaling_factor": 0.0},
            r"`scaling_factor` must be a positive.*Received: scaling_factor=0",
        ),
        (
            {"scaling_factor": -2},
            r"`scaling_factor` must be a positive.*Received: scaling_factor=-2",
        ),
        (
            {"scaling": "yarn"},
            r"`original_max_position` must be .*Received: original_max_position=None",
        ),
        (
            {"scaling": "dynamic"},
            r"`original_max_position` must be .*Received: original_max_position",
        ),
        ({"beta_fast": 1.0}, r"`beta_fast` must exceed .*Received: beta_fast=1.0"),
        ({"max_wavelength": 1.0}, r"`max_wavelength` must be greater.*Received: max_wavelength=1"),
        ({"interleaved": 1}, r"`interleaved` must be a bool.*Received: interleaved=1"),
        ({"sequence_axis": 3}, r"`feature_axis` must differ .*Received: feature_axis=-1"),
        ({"sequence_axis": 4}, r"`sequence_axis` must be an axis .*Received: sequence_axis=4"),
        ({"feature_axis": 0}, r"must leave axis 0 to the batch.*Received: sequence_axis=1"),
        ({"offset": 1.5}, r"`offset` must be an integer .*Received: offset"),
        (
            {"offset": np.array([1, 2])},
            r"`offset` must be an integer .*Received: offset.*shape=\(2,\)",
        ),
        (
            {"positions": np.zeros((B, T + 1))},
            r"`positions` must be .*Received: positions.shape=\(2, 10\)",
        ),
        (
            {"positions": np.zeros((B, T, 1))},
            r"`positions` must be .*Received: positions.shape=\(2, 9, 1\)",
        ),
        ({"positions": np.zeros(T, bool)}, r"`positions` must be .*Received: positions.dtype=bool"),
    ],
)
def test_bad_rotary_arguments_are_named(kwargs, match, x):
    with pytest.raises(ValueError, match=match):
        rotary(x, **kwargs)


def test_ntk_scalings_need_four_rotated_features(x):
    with pytest.raises(
        ValueError, match=r"`rotary_dim` must be at least 4 .*Received: rotary_dim=2"
    ):
        rotary(x, rotary_dim=2, scaling="ntk", scaling_factor=2.0)


def test_the_layer_checks_its_settings_in_the_constructor_and_its_inputs_in_call(x):
    with pytest.raises(ValueError, match=r"Received: scaling='rope'"):
        RotaryEmbedding(scaling="rope")
    with pytest.raises(ValueError, match=r"Received: scaling_factor=0"):
        RotaryEmbedding(scaling_factor=0)
    with pytest.raises(ValueError, match=r"Received: rotary_dim=12"):
        RotaryEmbedding(rotary_dim=12)(x)
    with pytest.raises(ValueError, match=r"`positions` must be .*Received: positions.shape=\(4,\)"):
        RotaryEmbedding()(x, positions=np.arange(4))
    with pytest.raises(ValueError, match=r"`mask` must have shape .*Received: mask.shape=\(2, 3\)"):
        RotaryEmbedding()(x, mask=np.ones((B, 3), bool))
    with pytest.raises(ValueError, match=r"Received: max_wavelength=0.5"):
        SinusoidalPositionEncoding(max_wavelength=0.5)
    with pytest.raises(
        ValueError, match=r"`positions` must be .*Received: positions.shape=\(2, 4\)"
    ):
        SinusoidalPositionEncoding()(x[:, :, 0], positions=np.zeros((B, 4)))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: sinusoidal_position_encoding(0, 4), r"`positions` must be a positive.*=0"),
        (lambda: sinusoidal_position_encoding(4, 0), r"`dim` must be a positive.*Received: dim=0"),
        (
            lambda: sinusoidal_position_encoding(np.zeros((1, 2, 3)), 4),
            r"`positions` must be .*Received: positions.shape=\(1, 2, 3\)",
        ),
        (lambda: qk_norm(np.ones((2, 4)), kind="layer"), r"`kind` must be one of.*'layer'"),
        (lambda: qk_norm(np.ones((2, 4)), epsilon=0), r"`epsilon` must be a positive.*=0"),
        (
            lambda: qk_norm(np.ones((2, 4)), np.ones(3)),
            r"`scale` must have shape \(D,\) = \(4,\).*Received: scale.shape=\(3,\)",
        ),
    ],
)
def test_bad_sinusoidal_and_qk_norm_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
