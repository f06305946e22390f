"""Position methods as pure ``keras.ops`` functions: rotary, sinusoidal, QK-norm.

``rotary`` rotates pairs of features by angles that grow with the position
(Su et al. 2021), so that ``q_i · k_j`` depends on ``i - j`` only; its
scalings stretch a model to longer contexts (linear, NTK-aware, dynamic NTK,
YaRN). ``sinusoidal_position_encoding`` is the additive encoding of Vaswani
et al. 2017. ``qk_norm`` normalises queries and keys per head before their
product (Dehghani et al. 2023; Gemma 3).

Every angle is computed in at least float32 and the result cast back to the
input's dtype, so float16 and bfloat16 inputs keep their accuracy.

Shape legend: B batch, T sequence length, H heads, D head dim, R rotated dim.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from attnkit import _checks
from attnkit.ops.scores import l2_normalize
from attnkit.ops.softmax import softmax_dtype

SCALINGS = ("linear", "ntk", "dynamic", "yarn")
QK_NORM_KINDS = ("rms", "l2")


# Checks --------------------------------------------------------------------------


def _axis(value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"`{name}` must be an integer axis. Received: {name}={value!r}")
    return value


def check_rotary_settings(
    *,
    max_wavelength=10000.0,
    rotary_dim=None,
    interleaved=False,
    scaling=None,
    scaling_factor=1.0,
    original_max_position=None,
    beta_fast=32.0,
    beta_slow=1.0,
    yarn_truncate=True,
    attention_factor=None,
    sequence_length=None,
    sequence_axis=1,
    feature_axis=-1,
):
    """The settings of ``rotary`` that do not depend on the input, checked.

    Returns them as a dict of normalised values (floats as floats); raises a
    ValueError naming the first bad one. ``RotaryEmbedding`` calls it in its
    constructor so bad settings fail before any call.
    """
    max_wavelength = _checks.positive_number(max_wavelength, "max_wavelength")
    if max_wavelength <= 1.0:
        raise ValueError(
            f"`max_wavelength` must be greater than 1. Received: max_wavelength={max_wavelength}"
        )
    rotary_dim = _checks.positive_int(rotary_dim, "rotary_dim", allow_none=True)
    if rotary_dim is not None and rotary_dim % 2:
        raise ValueError(
            "`rotary_dim` must be even: the features are rotated in pairs. "
            f"Received: rotary_dim={rotary_dim}"
        )
    interleaved = _checks.boolean(interleaved, "interleaved")
    scaling = _checks.one_of(scaling, "scaling", SCALINGS, allow_none=True)
    scaling_factor = _checks.positive_number(scaling_factor, "scaling_factor")
    original_max_position = _checks.positive_int(
        original_max_position, "original_max_position", allow_none=True
    )
    if scaling in ("dynamic", "yarn") and original_max_position is None:
        raise ValueError(
            f"`original_max_position` must be the pretraining context length for "
            f"scaling={scaling!r}. Received: original_max_position=None"
        )
    beta_fast = _checks.positive_number(beta_fast, "beta_fast")
    beta_slow = _checks.positive_number(beta_slow, "beta_slow")
    if beta_fast <= beta_slow:
        raise ValueError(
            f"`beta_fast` must exceed beta_slow={beta_slow}. Received: beta_fast={beta_fast}"
        )
    yarn_truncate = _checks.boolean(yarn_truncate, "yarn_truncate")
    attention_factor = _checks.positive_number(
        attention_factor, "attention_factor", allow_none=True
    )
    sequence_length = _checks.positive_int(sequence_length, "sequence_length", allow_none=True)
    return {
        "max_wavelength": max_wavelength,
        "rotary_dim": rotary_dim,
        "interleaved": interleaved,
        "scaling": scaling,
        "scaling_factor": scaling_factor,
        "original_max_position": original_max_position,
        "beta_fast": beta_fast,
        "beta_slow": beta_slow,
        "yarn_truncate": yarn_truncate,
        "attention_factor": attention_factor,
        "sequence_length": sequence_length,
        "sequence_axis": _axis(sequence_axis, "sequence_axis"),
        "feature_axis": _axis(feature_axis, "feature_axis"),
    }


def _positions_tensor(positions, length, dtype, name="positions"):
    """``positions`` as a (B|1, T) ``dtype`` tensor, or a ValueError naming it."""
    what = f"a numeric tensor of shape (T,) or (B, T) with T={length}"
    try:
        tensor = ops.convert_to_tensor(positions)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` must be {what}. Received: {name}={positions!r:.200}") from error
    kind = keras.backend.standardize_dtype(tensor.dtype)
    if "int" not in kind and "float" not in kind:
        raise ValueError(f"`{name}` must be {what}. Received: {name}.dtype={kind}")
    shape = tuple(tensor.shape)
    if len(shape) not in (1, 2) or (
        isinstance(shape[-1], int) and isinstance(length, int) and shape[-1] != length
    ):
        raise ValueError(f"`{name}` must be {what}. Received: {name}.shape={shape}")
    tensor = ops.cast(tensor, dtype)
    return tensor[None] if len(shape) == 1 else tensor


def _offset_tensor(offset, dtype):
    """``offset`` (an int or a scalar integer tensor) as a scalar ``dtype`` tensor."""
    what = "an integer or a scalar integer tensor"
    if isinstance(offset, bool):
        raise ValueError(f"`offset` must be {what}. Received: offset={offset!r}")
    if isinstance(offset, int):
        return ops.convert_to_tensor(float(offset), dtype)
    try:
        tensor = ops.convert_to_tensor(offset)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`offset` must be {what}. Received: offset={offset!r:.200}") from error
    kind = keras.backend.standardize_dtype(tensor.dtype)
    if "int" not in kind or len(tensor.shape) != 0:
        raise ValueError(
            f"`offset` must be {what}. Received: offset.dtype={kind}, "
            f"offset.shape={tuple(tensor.shape)}"
        )
    return ops.cast(tensor, dtype)


# Frequencies ---------------------------------------------------------------------


def _yarn_ramp(rotary_dim, base, s):
    """YaRN's per-pair interpolation weight in [0, 1] (1 = fully interpolated)."""
    k = np.arange(rotary_dim // 2, dtype=np.float64)

    def correction_dim(rotations):
        # The pair index whose wavelength fits ``rotations`` times in the original context.
        return (
            rotary_dim
            * math.log(s["original_max_position"] / (rotations * 2 * math.pi))
            / (2 * math.log(base))
        )

    low, high = correction_dim(s["beta_fast"]), correction_dim(s["beta_slow"])
    if s["yarn_truncate"]:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0.0), min(high, rotary_dim - 1.0)
    return np.clip((k - low) / max(high - low, 1e-3), 0.0, 1.0)


def rotary_inverse_frequencies(rotary_dim: int, **settings) -> np.ndarray:
    """The (R/2,) float64 inverse frequencies ``θ_k`` of ``rotary`` for static scalings.

    ``θ_k = base^(-2k/R)``, ``k = 0..R/2-1``, scaled as ``rotary``'s
    ``scaling`` says; ``"dynamic"`` depends on the length and is computed in
    ``rotary`` itself (here it gives the unscaled frequencies, its value up to
    ``original_max_position``).

    Example:

    >>> from attnkit.ops.positions import rotary_inverse_frequencies
    >>> rotary_inverse_frequencies(4, max_wavelength=100.0).tolist()
    [1.0, 0.1]
    """
    s = check_rotary_settings(**settings)
    rotary_dim = _checks.positive_int(rotary_dim, "rotary_dim")
    base, factor = s["max_wavelength"], s["scaling_factor"]
    exponent = np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim  # 2k / R
    if s["scaling"] == "ntk":
        base = base * factor ** (rotary_dim / _ntk_denominator(rotary_dim, "ntk"))
    inverse = base**-exponent
    if s["scaling"] in (None, "linear"):
        return inverse / factor
    if s["scaling"] == "yarn":
        ramp = _yarn_ramp(rotary_dim, base, s)
        return inverse / factor * ramp + inverse * (1.0 - ramp)
    return inverse


def _ntk_denominator(rotary_dim, scaling):
    if rotary_dim < 4:
        raise ValueError(
            f"`rotary_dim` must be at least 4 for scaling={scaling!r} (the base grows as "
            f"s^(R/(R-2))). Received: rotary_dim={rotary_dim}"
        )
    return rotary_dim - 2


def yarn_attention_factor(scaling_factor: float, attention_factor: float | None = None) -> float:
    """YaRN's magnitude factor ``m = 0.1 ln(s) + 1`` (1 for ``s <= 1``), or ``attention_factor``.

    ``rotary`` multiplies the rotated features of q and of k by ``m``, so their
    product grows by ``m² = 1/t``, the paper's attention temperature.

    >>> from attnkit.ops.positions import yarn_attention_factor
    >>> round(yarn_attention_factor(4.0), 6)
    1.138629
    """
    if attention_factor is not None:
        return float(attention_factor)
    return 0.1 * math.log(scaling_factor) + 1.0 if scaling_factor > 1 else 1.0


# Rotary --------------------------------------------------------------------------


def rotary(
    x,
    positions=None,
    *,
    max_wavelength=10000.0,
    rotary_dim=None,
    interleaved=False,
    scaling=None,
    scaling_factor=1.0,
    original_max_position=None,
    beta_fast=32.0,
    beta_slow=1.0,
    yarn_truncate=True,
    attention_factor=None,
    sequence_length=None,
    sequence_axis=1,
    feature_axis=-1,
    offset=0,
):
    """Rotary position embedding (RoPE, Su et al. 2021) with its context scalings.

    Token ``t`` at position ``p_t`` (``positions[t] + offset``, by default
    ``t + offset``) has each pair ``(a, b)`` of its first ``R`` features
    rotated by the angle ``p_t · θ_k``:

        a' = a cos(p θ_k) - b sin(p θ_k)
        b' = b cos(p θ_k) + a sin(p θ_k),   θ_k = base^(-2k/R), k = 0..R/2-1,

    with ``base = max_wavelength``. The remaining features pass unchanged
    (partial rotary, GPT-NeoX/GPT-J's ``rotary_dim``). Then ``q_iᵀ k_j``
    depends on ``i - j`` only. Pairs are ``(x_k, x_{k+R/2})`` (half-split,
    GPT-NeoX, Hugging Face LLaMA and keras-hub) or, with ``interleaved``,
    ``(x_{2k}, x_{2k+1})`` (the paper, GPT-J).

    Scalings, for a model pretrained on ``L0 = original_max_position`` tokens
    run with a factor ``s = scaling_factor``:

    - ``None`` or ``"linear"`` (position interpolation, Chen et al. 2023):
      ``θ_k / s``; with the default ``s = 1``, plain RoPE.
    - ``"ntk"`` (NTK-aware): the base becomes ``base · s^(R/(R-2))``, so the
      lowest frequency is interpolated by ``s`` and the highest kept.
    - ``"dynamic"`` (dynamic NTK, as Hugging Face's): the same with the factor
      ``s · L / L0 - (s - 1)`` in place of ``s`` when the length ``L``
      exceeds ``L0`` (plain RoPE up to ``L0``). ``L`` is ``sequence_length``
      when given, else the positions seen in this call (their largest plus
      one). So by default the angles depend on the call: a cached decoding
      step (``L = offset + 1`` growing) does not equal the whole-sequence
      call once it exceeds ``L0``, unless ``sequence_length`` fixes ``L``.
    - ``"yarn"`` (Peng et al. 2023): per pair, with the ramp ``γ_k`` from 0
      where the pair turns more than ``beta_fast`` times in ``L0`` tokens to
      1 where it turns fewer than ``beta_slow`` times (correction
      dimensions rounded outwards when ``yarn_truncate``, as the authors'
      code), ``θ_k ← (1 - γ_k) θ_k + γ_k θ_k / s``; and the rotated
      features are multiplied by ``m = 0.1 ln(s) + 1`` (or
      ``attention_factor``), so that ``q·k`` grows by ``m² = 1/t``, the
      paper's temperature. This is the convention of Hugging Face and
      keras-hub (``cos`` and ``sin`` carry ``m``); pass
      ``attention_factor=1.0`` to apply the temperature elsewhere.

    Angles and the rotation are computed in at least float32 (frequencies of
    static scalings in float64 NumPy) and the result is cast back to
    ``x.dtype``.

    Args:
        x: tensor with a sequence axis and a feature axis, such as
            (B, T, H, D) or (B, T, D).
        positions: optional positions, (T,) or (B, T), integer or float.
            Defaults to ``0..T-1``.
        max_wavelength: float > 1, the base. Defaults to `10000.0`.
        rotary_dim: even int ``R <= D``, the rotated leading features, or
            None for all of them. Defaults to `None`.
        interleaved: bool, pair ``(x_{2k}, x_{2k+1})`` instead of
            ``(x_k, x_{k+R/2})``. Defaults to `False`.
        scaling: None, ``"linear"``, ``"ntk"``, ``"dynamic"`` or ``"yarn"``.
            Defaults to `None`.
        scaling_factor: float > 0, ``s``. Defaults to `1.0`.
        original_max_position: int, ``L0`` (needed by ``"dynamic"`` and
            ``"yarn"``). Defaults to `None`.
        beta_fast: float, YaRN's rotations above which a pair is kept.
            Defaults to `32.0`.
        beta_slow: float, YaRN's rotations below which a pair is fully
            interpolated. Defaults to `1.0`.
        yarn_truncate: bool, round YaRN's correction range outwards to whole
            pairs. Defaults to `True`.
        attention_factor: float > 0, YaRN's ``m``, or None for
            ``0.1 ln(s) + 1``. Defaults to `None`.
        sequence_length: int, the length ``L`` of ``"dynamic"``, or None for
            the positions of the call. Defaults to `None`.
        sequence_axis: int, the axis of T. Defaults to `1`.
        feature_axis: int, the axis of D. Defaults to `-1`.
        offset: int or scalar integer tensor added to the positions (the
            cache index in cached decoding). Defaults to `0`.

    Returns:
        A tensor of ``x``'s shape and dtype.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import rotary
    >>> q = np.random.randn(2, 6, 4, 8).astype("float32")  # (B, T, H, D)
    >>> tuple(rotary(q, rotary_dim=4, scaling="yarn", scaling_factor=4.0,
    ...              original_max_position=4).shape)
    (2, 6, 4, 8)

    References:
        Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
        Embedding", arXiv:2104.09864. Chen et al. 2023, "Extending Context
        Window of Large Language Models via Positional Interpolation",
        arXiv:2306.15595. Peng et al. 2023, "YaRN: Efficient Context Window
        Extension of Large Language Models", arXiv:2309.00071.
    """
    s = check_rotary_settings(
        max_wavelength=max_wavelength,
        rotary_dim=rotary_dim,
        interleaved=interleaved,
        scaling=scaling,
        scaling_factor=scaling_factor,
        original_max_position=original_max_position,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        yarn_truncate=yarn_truncate,
        attention_factor=attention_factor,
        sequence_length=sequence_length,
        sequence_axis=sequence_axis,
        feature_axis=feature_axis,
    )
    x = ops.convert_to_tensor(x)
    rank = len(x.shape)
    seq_axis, feat_axis = _normalise_axes(rank, s["sequence_axis"], s["feature_axis"])
    depth = x.shape[feat_axis]
    r = depth if s["rotary_dim"] is None else s["rotary_dim"]
    if isinstance(depth, int) and (r % 2 or r > depth):
        raise ValueError(
            f"`rotary_dim` must be even and at most the feature size {depth} (default: all "
            f"features). Received: rotary_dim={r}"
        )
    dtype = softmax_dtype(x.dtype)
    length = x.shape[seq_axis]

    # Positions (B|1, T), in at least float32.
    if positions is None:
        pos = ops.arange(ops.shape(x)[seq_axis], dtype=dtype)[None]  # (1, T)
    else:
        pos = _positions_tensor(positions, length, dtype)  # (B|1, T)
        if rank == 2 and pos.shape[0] != 1:
            raise ValueError(
                "`positions` must have shape (T,) for an input without a batch axis. "
                f"Received: positions.shape={tuple(ops.shape(positions))}"
            )
    pos = pos + _offset_tensor(offset, dtype)

    # Inverse frequencies (R/2,) and the angles (B|1, T, R/2).
    inverse = ops.convert_to_tensor(rotary_inverse_frequencies(r, **_static(s)), dtype)
    if s["scaling"] == "dynamic":
        inverse = _dynamic_inverse(r, s, pos, dtype)
    angles = pos[..., None] * inverse  # (B|1, T, R/2)
    cos, sin = ops.cos(angles), ops.sin(angles)
    if s["scaling"] == "yarn":
        m = yarn_attention_factor(s["scaling_factor"], s["attention_factor"])
        cos, sin = cos * m, sin * m

    # x as (B, T, ..., D), or (T, D) without a batch axis.
    target = (0, -1) if rank == 2 else (1, -1)
    moved = ops.moveaxis(x, (seq_axis, feat_axis), target)
    if rank == 2:
        cos, sin = cos[0], sin[0]  # (T, R/2)
    else:
        middle = (1,) * (rank - 3)
        cos = ops.reshape(cos, (ops.shape(cos)[0], ops.shape(cos)[1], *middle, r // 2))
        sin = ops.reshape(sin, (ops.shape(sin)[0], ops.shape(sin)[1], *middle, r // 2))
    xr = ops.cast(moved[..., :r], dtype)  # (B, T, ..., R)
    if interleaved:
        a = ops.take(xr, np.arange(0, r, 2), axis=-1)  # (B, T, ..., R/2)
        b = ops.take(xr, np.arange(1, r, 2), axis=-1)
    else:
        a, b = xr[..., : r // 2], xr[..., r // 2 :]
    rotated = ops.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)  # (..., R)
    if interleaved:  # back from (a'_0.., b'_0..) to (a'_0, b'_0, a'_1, ...)
        order = np.stack([np.arange(r // 2), np.arange(r // 2) + r // 2], -1).reshape(-1)
        rotated = ops.take(rotated, order, axis=-1)
    rotated = ops.cast(rotated, x.dtype)
    if depth is None or r < depth:
        rotated = ops.concatenate([rotated, moved[..., r:]], axis=-1)  # (..., D)
    return ops.moveaxis(rotated, target, (seq_axis, feat_axis))


def _static(s):
    """The settings ``rotary_inverse_frequencies`` takes (``"dynamic"`` as unscaled)."""
    static = {k: v for k, v in s.items() if k != "rotary_dim"}
    if s["scaling"] == "dynamic":
        static.update(scaling="linear", scaling_factor=1.0)
    return static


def _dynamic_inverse(r, s, pos, dtype):
    """Dynamic NTK's (R/2,) inverse frequencies for this call's length, as a tensor."""
    exponent = r / _ntk_denominator(r, "dynamic")
    if s["sequence_length"] is not None:
        length = ops.convert_to_tensor(float(s["sequence_length"]), dtype)
    else:
        length = ops.max(pos) + 1.0
    factor, l0 = s["scaling_factor"], float(s["original_max_position"])
    growth = factor * ops.maximum(length, l0) / l0 - (factor - 1.0)  # 1 up to L0
    log_base = math.log(s["max_wavelength"]) + exponent * ops.log(growth)
    two_k = ops.convert_to_tensor(np.arange(0, r, 2, dtype=np.float64) / r, dtype)
    return ops.exp(-two_k * log_base)


def _normalise_axes(rank, sequence_axis, feature_axis):
    if rank < 2:
        raise ValueError(
            f"`x` must have a sequence axis and a feature axis. Received: x.shape rank {rank}"
        )
    axes = []
    for name, axis in (("sequence_axis", sequence_axis), ("feature_axis", feature_axis)):
        if not -rank <= axis < rank:
            raise ValueError(
                f"`{name}` must be an axis of the rank-{rank} input. Received: {name}={axis}"
            )
        axes.append(axis % rank)
    if axes[0] == axes[1]:
        raise ValueError(
            "`feature_axis` must differ from sequence_axis="
            f"{sequence_axis}. Received: feature_axis={feature_axis}"
        )
    if rank > 2 and 0 in axes:
        raise ValueError(
            "`sequence_axis` and `feature_axis` must leave axis 0 to the batch. "
            f"Received: sequence_axis={sequence_axis}, feature_axis={feature_axis}"
        )
    return axes


# Sinusoidal ----------------------------------------------------------------------


def sinusoidal_position_encoding(positions, dim, max_wavelength=10000.0, *, dtype="float32"):
    """The sinusoidal position encoding of Vaswani et al. 2017.

        PE(p, 2i) = sin(p / base^(2i/D)),   PE(p, 2i+1) = cos(p / base^(2i/D)),

    ``base = max_wavelength`` (keras-hub's ``SinePositionEncoding`` layout:
    even features sine, odd features cosine; an odd ``D`` ends with a sine).
    Computed in float32 and cast to ``dtype``.

    Args:
        positions: an int ``T`` (positions ``0..T-1``) or a numeric tensor
            of positions, (T,) or (B, T).
        dim: int, the feature size ``D``.
        max_wavelength: float > 1. Defaults to `10000.0`.
        dtype: the result's dtype. Defaults to `"float32"`.

    Returns:
        (T, D) for an int or (T,) positions, (B, T, D) for (B, T) positions.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import sinusoidal_position_encoding
    >>> np.round(np.asarray(sinusoidal_position_encoding(2, 4), 'float64'), 3).tolist()
    [[0.0, 1.0, 0.0, 1.0], [0.841, 0.54, 0.01, 1.0]]

    References:
        Vaswani et al. 2017, "Attention Is All You Need", arXiv:1706.03762.
    """
    dim = _checks.positive_int(dim, "dim")
    base = _checks.positive_number(max_wavelength, "max_wavelength")
    if base <= 1.0:
        raise ValueError(
            f"`max_wavelength` must be greater than 1. Received: max_wavelength={max_wavelength}"
        )
    if isinstance(positions, int) and not isinstance(positions, bool):
        pos = ops.arange(_checks.positive_int(positions, "positions"), dtype="float32")
    else:
        pos = _positions_tensor(positions, None, "float32")  # (B|1, T)
        if len(ops.shape(positions)) == 1:
            pos = pos[0]  # (T,)
    j = np.arange(dim)
    inverse = ops.convert_to_tensor(base ** (-2.0 * (j // 2) / dim), "float32")  # (D,)
    angles = pos[..., None] * inverse  # (..., T, D)
    sine = ops.convert_to_tensor(j % 2 == 0)
    return ops.cast(ops.where(sine, ops.sin(angles), ops.cos(angles)), dtype)


# QK-norm -------------------------------------------------------------------------


def qk_norm(x, scale=None, *, kind="rms", epsilon=1e-6):
    """Normalises queries or keys over the last axis, with an optional learned scale.

    ``"rms"``: ``x / sqrt(mean(x²) + ε) · g``; ``"l2"``:
    ``x / sqrt(max(Σ x², ε)) · g`` (``attnkit.ops.scores.l2_normalize``,
    the package's one L2 normalisation). Both are computed in at least
    float32 and cast back to ``x.dtype``; a zero vector gives zeros. ``g`` is
    ``scale`` as given (initialise it to ones; Gemma's checkpoints store
    ``w`` with ``g = 1 + w``).

    Args:
        x: tensor (..., D), e.g. projected heads (B, T, H, D).
        scale: optional (D,) tensor ``g``. Defaults to `None`.
        kind: ``"rms"`` or ``"l2"``. Defaults to `"rms"`.
        epsilon: float > 0, added to the mean square (rms) or the least sum
            of squares (l2). Defaults to `1e-6`.

    Returns:
        A tensor of ``x``'s shape and dtype.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import qk_norm
    >>> np.round(np.asarray(qk_norm(np.array([[3.0, 4.0]]), kind="l2"), "float64"), 6).tolist()
    [[0.6, 0.8]]

    References:
        Dehghani et al. 2023, "Scaling Vision Transformers to 22 Billion
        Parameters", arXiv:2302.05442. Gemma Team 2025, "Gemma 3 Technical
        Report", arXiv:2503.19786.
    """
    kind = _checks.one_of(kind, "kind", QK_NORM_KINDS)
    epsilon = _checks.positive_number(epsilon, "epsilon")
    x = ops.convert_to_tensor(x)
    if kind == "l2":
        out = l2_normalize(x, eps=epsilon)
    else:
        x32 = ops.cast(x, softmax_dtype(x.dtype))
        out = x32 * ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + epsilon)
    if scale is not None:
        scale = ops.convert_to_tensor(scale)
        if len(scale.shape) != 1 or scale.shape[0] != x.shape[-1]:
            raise ValueError(
                f"`scale` must have shape (D,) = ({x.shape[-1]},). "
                f"Received: scale.shape={tuple(scale.shape)}"
            )
        out = out * ops.cast(scale, out.dtype)
    return ops.cast(out, x.dtype)
