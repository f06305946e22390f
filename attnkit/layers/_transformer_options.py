"""Transformer-era options of ``MultiHeadAttention``, as small pure functions.

The layer checks its options here once (``__init__``) and, on every call,
turns them into the core's arguments: one ``score_mod`` (position bias, the
caller's ``score_mod``, the soft cap, in that order) with its learned params,
one ``mask_mod`` (window with sinks, document mask, the caller's
``mask_mod``, ANDed) and the learned ``sinks``.

Positions. The layer places query ``i`` at key position ``i`` (top-left, as
Keras' causal mask) and, with a cache and ``cache_update_index=t``, at
``t + i``. The core is called with ``alignment="top_left"``, whose ``q_idx``
is ``i``; ``shift_queries`` adds ``t`` so every mod sees the query's absolute
position and decoding step by step equals the whole-sequence call.

Shape legend: B batch, Tq query length, Tv key/value length, H heads, D head dim.
"""

from __future__ import annotations

import inspect

import keras
from keras import ops

from attnkit import _checks
from attnkit.ops import modding
from attnkit.ops import mods as mods_lib
from attnkit.ops.positions import qk_norm, rotary

POSITION_BIASES = ("alibi", "t5")
QK_NORMS = ("rms", "l2")

# Options that change the logits or the softmax: they need the core's
# ``score_mod``/``sinks`` and cannot be folded into a boolean mask.
_SCORE_OPTIONS = ("position_bias", "logit_soft_cap", "learned_sinks", "score_mod")


# Constructor checks ---------------------------------------------------------------


def check_position_bias(value):
    return _checks.one_of(value, "position_bias", POSITION_BIASES, allow_none=True)


def check_t5(num_buckets, max_distance, bidirectional):
    """T5 settings valid for every direction they may be used in.

    ``bidirectional=None`` (follow ``use_causal_mask``) must suit both: at
    least 4 buckets, and ``max_distance`` beyond the exactly-bucketed
    distances of the causal layout (half the buckets).
    """
    num_buckets = _checks.positive_int(num_buckets, "t5_num_buckets")
    max_distance = _checks.positive_int(max_distance, "t5_max_distance")
    bidirectional = _checks.optional_bool(bidirectional, "t5_bidirectional")
    minimum = 2 if bidirectional is False else 4
    if num_buckets < minimum:
        raise ValueError(
            f"`t5_num_buckets` must be at least {minimum} (2 per direction when the "
            "bias may be bidirectional, half of them exact). "
            f"Received: t5_num_buckets={num_buckets}"
        )
    exact = num_buckets // 4 if bidirectional else num_buckets // 2
    if max_distance <= exact:
        raise ValueError(
            f"`t5_max_distance` must exceed the {exact} exactly-bucketed distances of "
            f"t5_num_buckets={num_buckets}. Received: t5_max_distance={max_distance}"
        )
    return num_buckets, max_distance, bidirectional


def check_soft_cap(value):
    return _checks.positive_number(value, "logit_soft_cap", allow_none=True)


def check_attention_sinks(value, sliding_window):
    """StreamingLLM's sink count: a positive int below ``sliding_window``.

    Without a window every key is visible and sinks change nothing; with
    ``k >= sliding_window`` the sinks would cover a whole window.
    """
    if value is None:
        return None
    value = _checks.positive_int(value, "attention_sinks")
    if sliding_window is None:
        raise ValueError(
            "`attention_sinks` keeps the first tokens visible beside a sliding window "
            f"and needs `sliding_window`. Received: attention_sinks={value}, sliding_window=None"
        )
    if value >= sliding_window:
        raise ValueError(
            f"`attention_sinks` must be smaller than sliding_window={sliding_window}. "
            f"Received: attention_sinks={value}"
        )
    return value


def check_qk_norm(value, epsilon):
    value = _checks.one_of(value, "qk_norm", QK_NORMS, allow_none=True)
    epsilon = _checks.positive_number(epsilon, "qk_norm_epsilon")
    return value, epsilon


# Settings the layer supplies itself: the tensor, its positions and layout.
_ROTARY_OWN = ("x", "positions", "offset", "sequence_axis", "feature_axis")


def check_position_embedding(value, key_dim):
    """``None``, or the keyword arguments of ``attnkit.ops.rotary`` as a dict.

    ``"rotary"`` means the defaults; a dict holds rotary settings
    (``max_wavelength``, ``rotary_dim``, ``interleaved``, ``scaling``, ...).
    ``rotary_dim`` (the rotated features, the first ones of each head) must be
    even and at most ``key_dim``.
    """
    if value is None:
        return None
    if value == "rotary":
        settings = {}
    elif isinstance(value, dict):
        settings = dict(value)
    else:
        raise ValueError(
            "`position_embedding` must be None, 'rotary' or a dict of rotary settings. "
            f"Received: position_embedding={value!r:.200}"
        )
    accepted = [
        name
        for name, p in inspect.signature(rotary).parameters.items()
        if name not in _ROTARY_OWN and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise ValueError(
            f"`position_embedding` settings must be among {accepted}. "
            f"Received: position_embedding={value!r:.200} (unknown: {unknown})"
        )
    rotary_dim = settings.get("rotary_dim")
    dim = key_dim if rotary_dim is None else rotary_dim
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2 or dim > key_dim:
        raise ValueError(
            "`position_embedding` rotates pairs of features of each head: its "
            f"rotary_dim (default key_dim={key_dim}) must be an even int from 2 to "
            f"key_dim={key_dim}. Received: position_embedding={value!r:.200}"
        )
    try:  # the op's own checks of the other settings, once, on a tiny input
        rotary(ops.zeros((1, 1, 1, key_dim)), **settings)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`position_embedding` settings do not suit attnkit.ops.rotary: {error}. "
            f"Received: position_embedding={value!r:.200}"
        ) from error
    return settings


def apply_rotary(x, settings, offset):
    """Rotates (B, T, H, D) ``x``; token ``t`` sits at position ``offset + t``."""
    return rotary(x, offset=offset, **settings)


def apply_qk_norm(x, scale, kind, epsilon):
    """Normalises (B, T, H, D) ``x`` per head with the learned (D,) ``scale``."""
    return qk_norm(x, scale, kind=kind, epsilon=epsilon)


# Call-time checks -----------------------------------------------------------------


def check_segment_ids(segment_ids, batch, length, legend):
    """``segment_ids`` as int32 (B|1, T), or a ValueError naming it."""
    try:
        ids = ops.convert_to_tensor(segment_ids)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`segment_ids` must be an integer tensor of shape {legend}. "
            f"Received: segment_ids={segment_ids!r:.200}"
        ) from error
    dtype = keras.backend.standardize_dtype(ids.dtype)
    if "int" not in dtype:
        raise ValueError(
            f"`segment_ids` must be an integer tensor of shape {legend}. "
            f"Received: segment_ids.dtype={dtype}"
        )
    shape = tuple(d if isinstance(d, int) else None for d in ids.shape)
    if (
        len(shape) != 2
        or (None not in (shape[0], batch) and shape[0] not in (1, batch))
        or (None not in (shape[1], length) and shape[1] != length)
    ):
        raise ValueError(
            f"`segment_ids` must be an integer tensor of shape {legend} = "
            f"({batch}, {length}). Received: segment_ids.shape={shape}"
        )
    return ops.cast(ids, "int32")


def check_mod(fn, name):
    if fn is not None and not callable(fn):
        raise ValueError(f"`{name}` must be a callable or None. Received: {name}={fn!r:.200}")
    return fn


def refuse_score_options(layer_cls, hook, active):
    """A ValueError when score-changing options meet an overridden hook."""
    if active:
        raise ValueError(
            f"{layer_cls.__name__} overrides `{hook}`, which gets a boolean mask only; "
            f"these options change the logits and need MultiHeadAttention's own "
            f"`_compute_attention`. Received: {', '.join(active)}"
        )


# Mods -----------------------------------------------------------------------------


def shift_queries(mod, shift, *, is_score):
    """``mod`` seeing ``q_idx + shift``: the query's absolute position."""
    if mod is None or (isinstance(shift, int) and shift == 0):
        return mod
    if is_score:

        def shifted_score(score, batch, head, q_idx, kv_idx, *params):
            return mod(score, batch, head, q_idx + shift, kv_idx, *params)

        shifted_score.num_params = getattr(mod, "num_params", 0)
        return shifted_score

    def shifted_mask(batch, head, q_idx, kv_idx):
        return mod(batch, head, q_idx + shift, kv_idx)

    return shifted_mask


def _takes_no_params(fn, name):
    """A caller's score_mod takes the five arguments of the convention only."""
    count = getattr(fn, "num_params", None)
    if count is None:
        try:
            parameters = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return fn
        positional = [
            p
            for p in parameters
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        count = max(len(positional) - 5, 0)
    if count:
        raise ValueError(
            f"`{name}` must take (score, batch, head, q_idx, kv_idx) only: close over "
            f"constants, or give learned tables to the layer. Received: {name} taking "
            f"{count} params"
        )

    def plain(score, batch, head, q_idx, kv_idx):
        return fn(score, batch, head, q_idx, kv_idx)

    return plain


def score_mod(
    *,
    position_bias,
    num_heads,
    t5_settings,
    t5_table,
    causal,
    user_score_mod,
    soft_cap,
    shift,
):
    """``(score_mod, score_mod_params)`` of one call; ``(None, ())`` when nothing applies.

    ``s <- cap · tanh(user(s + bias) / cap)``: the position bias first, then
    the caller's function, the soft cap last (it bounds the final logits).
    """
    parts, params = [], ()
    if position_bias == "alibi":
        parts.append(mods_lib.alibi(num_heads))
    elif position_bias == "t5":
        num_buckets, max_distance, bidirectional = t5_settings
        bidirectional = (not causal) if bidirectional is None else bidirectional
        parts.append(mods_lib.t5_relative_bias(num_buckets, max_distance, bidirectional))
        params = (t5_table,)
    if user_score_mod is not None:
        parts.append(_takes_no_params(user_score_mod, "score_mod"))
    if soft_cap is not None:
        parts.append(mods_lib.soft_cap(soft_cap))
    if not parts:
        return None, ()
    mod = parts[0] if len(parts) == 1 and not params else mods_lib.compose_scores(*parts)
    return shift_queries(mod, shift, is_score=True), params


def mask_mod(*, attention_sinks, sliding_window, segment_ids, user_mask_mod, shift):
    """One call's ``mask_mod`` (AND of its parts), or None.

    With ``attention_sinks`` the layer's window becomes StreamingLLM's
    ``|i - j| < window or j < attention_sinks`` (and is not passed as the
    core's ``window``). ``segment_ids`` (B|1, Tv) holds the document of every
    key position; query ``i`` reads it at its own position.
    """
    parts = []
    if attention_sinks is not None:
        parts.append(mods_lib.sliding_window_with_sinks(sliding_window, attention_sinks))
    if segment_ids is not None:
        parts.append(mods_lib.document_mask(segment_ids))
    if user_mask_mod is not None:
        parts.append(user_mask_mod)
    if not parts:
        return None
    mod = parts[0] if len(parts) == 1 else mods_lib.and_masks(*parts)
    return shift_queries(mod, shift, is_score=False)


def evaluate_mask_mod(mod, batch, heads, tq, tv):
    """``mod`` on the whole grid: bool (B|1, H|1, Tq, Tv), for hooks that take a mask."""
    q_pos, kv_pos = ops.arange(tq, dtype="int32"), ops.arange(tv, dtype="int32")
    idx = modding.indices(batch, heads, q_pos, kv_pos)
    return ops.cast(mod(*idx), "bool")


# Docstrings shared by MultiHeadAttention and GroupedQueryAttention ----------------

DOC = """Transformer options (all off by default, and then the layer is Keras'):
    query `i` sits at key position `i` (top-left, as the causal mask) or,
    with a cache and `cache_update_index=t`, at `t + i`; every option and the
    `score_mod`/`mask_mod` call arguments see these positions, so decoding
    step by step equals the whole-sequence call.

    1. `qk_norm` (Dehghani et al. 2023, https://arxiv.org/abs/2302.05442;
       Gemma 3): after the projections, per head,
       `q <- g_q * q / sqrt(mean_d q_d^2 + eps)` (`"rms"`) or
       `q <- g_q * q / ||q||` (`"l2"`), likewise `k` with `g_k`; `g_q`, `g_k`
       are learned `(Dk,)` weights `query_norm`, `key_norm` (ones at first),
       computed by `attnkit.ops.qk_norm`.
    2. `position_embedding` (rotary, Su et al. 2021,
       https://arxiv.org/abs/2104.09864): `q` and `k` at position `p` are
       rotated pairwise by the angles `p * theta_m`,
       `theta_m = max_wavelength^(-2m / rotary_dim)`, after `qk_norm` and
       before the scores, by `attnkit.ops.rotary` (the cache holds rotated
       keys), so `q_i . k_j` depends on `i - j` only.
    3. The logits `s_ij = q_i . k_j / sqrt(Dk)` then get, in this order:
       - `position_bias="alibi"` (Press et al. 2021,
         https://arxiv.org/abs/2108.12409): `s_ij - m_h |i - j|`, with
         `m_h = 2^(-8h/H)` (`attnkit.ops.mods.alibi`);
       - `position_bias="t5"` (Raffel et al. 2020,
         https://arxiv.org/abs/1910.10683): `s_ij + b[bucket(j - i), h]`, `b`
         a learned `(t5_num_buckets, H)` weight `relative_attention_bias`
         (zeros at first); distances below `n/2` get a bucket each, larger
         ones logarithmic buckets up to `t5_max_distance`; bidirectional
         (separate buckets for keys after the query) unless causal;
       - the `score_mod` call argument;
       - `logit_soft_cap=c` (Gemma Team 2024, https://arxiv.org/abs/2408.00118):
         `s <- c * tanh(s / c)`, last, so every logit lies in `(-c, c)`.
    4. Masks: with `attention_sinks=k` (StreamingLLM, Xiao et al. 2023,
       https://arxiv.org/abs/2309.17453) the window becomes
       `|i - j| < sliding_window or j < k`: the first `k` tokens stay
       visible to every query; `segment_ids` keeps the pairs of one document,
       `segment(i) == segment(j)`; the `mask_mod` call argument; all ANDed
       with the masks below.
    5. `learned_sinks` (gpt-oss, OpenAI 2025, https://arxiv.org/abs/2508.10925):
       a learned logit `z_h` per head (weight `sinks`, zeros at first) joins
       the softmax denominator and carries no value:
       `w_ij = exp(s_ij) / (exp(z_h) + sum_j' exp(s_ij'))`, so a row of the
       weights sums to less than 1.

    The new weights come after Keras' eight (T5 table, sinks, query norm,
    key norm). A subclass overriding `_compute_attention` or
    `_masked_softmax` gets the mask options folded into `attention_mask`;
    the options that change the logits (position bias, soft cap, learned
    sinks, `score_mod`) then raise a ValueError. They need implementation
    `"auto"`, `"naive"` or `"chunked"` (the fused kernel has no score
    functions)."""

ARGS_DOC = """position_bias: `None`, `"alibi"` or `"t5"` (Transformer options 3).
            Defaults to `None`.
        t5_num_buckets: rows of the T5 table, at least 4 (2 when
            `t5_bidirectional=False`). Defaults to `32`.
        t5_max_distance: distances from here on share T5's last bucket.
            Defaults to `128`.
        t5_bidirectional: `True` or `False` fixes T5's bucketing; `None`
            makes it bidirectional unless `use_causal_mask`. Defaults to `None`.
        logit_soft_cap: positive cap `c` of `c * tanh(s / c)`, or `None`.
            Defaults to `None`.
        attention_sinks: number `k` of first tokens that stay visible beside
            the sliding window (StreamingLLM); needs `sliding_window > k`.
            Defaults to `None`.
        learned_sinks: one learned sink logit per head in the softmax
            denominator (gpt-oss). Defaults to `False`.
        qk_norm: `None`, `"rms"` or `"l2"`: normalise q and k per head with a
            learned scale. Defaults to `None`.
        qk_norm_epsilon: the `eps` of `qk_norm`. Defaults to `1e-6`.
        position_embedding: `None`, `"rotary"`, or a dict of
            `attnkit.ops.rotary` settings (`max_wavelength`, `rotary_dim`, an
            even number up to `key_dim`, `interleaved`, `scaling`, ...; the
            layer gives the positions). With `scaling="dynamic"` set
            `sequence_length`, or cached decoding past the original length
            differs from the whole-sequence call. Defaults to `None`."""

CALL_DOC = """segment_ids: integer `(B, T)`, the document of every position of a
            packed self-attention input (with a cache: `(B, S)`, of every
            cache position); query `i` sees key `j` only when their ids are
            equal. Defaults to `None`.
        score_mod: `score_mod(score, batch, head, q_idx, kv_idx) -> score`,
            `attnkit.ops.attention`'s convention with `q_idx` the query's
            position above; after the position bias, before the soft cap.
            Defaults to `None`.
        mask_mod: `mask_mod(batch, head, q_idx, kv_idx) -> bool`, likewise,
            ANDed with the masks. Defaults to `None`."""


def document(cls):
    """Fills the ``{transformer_*}`` markers of ``cls``'s docstring."""
    cls.__doc__ = (
        cls.__doc__.replace("{transformer_options}", DOC)
        .replace("{transformer_args}", ARGS_DOC)
        .replace("{transformer_call}", CALL_DOC)
    )
    return cls
