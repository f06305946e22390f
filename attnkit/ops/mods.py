"""A library of score and mask modifications for ``attnkit.ops.attention``.

Every function here builds a pure ``keras.ops`` function in the convention of
``attnkit.ops.attention`` (FlexAttention's, in Keras' layout):

    mask_mod(batch, head, q_idx, kv_idx) -> bool, True = may attend
    score_mod(score, batch, head, q_idx, kv_idx, *params) -> score

``score`` is a block of scaled logits (B, H, q, k) (the whole matrix on the
naive path, one block on the chunked path); the indices are int32 tensors
broadcastable to it: batch (B, 1, 1, 1), head (1, H, 1, 1) (the global query
head), q_idx (1, 1, q, 1), kv_idx (1, 1, 1, k). ``q_idx`` counts query
positions in the keys' coordinates, bottom-right aligned (``i + Tv - Tq``), so
every mod written for a whole sequence also serves a decoding step at the end
of a key/value cache.

Score mods: ``alibi`` (Press et al. 2021), ``t5_relative_bias`` (Raffel et al.
2020, a learned table passed through ``score_mod_params``), ``soft_cap``
(Gemma 2), composed with ``compose_scores``. Mask mods: ``causal_mask``,
``sliding_window``, ``dilated_sliding_window``, ``sliding_window_with_sinks``
(StreamingLLM, Xiao et al. 2023), ``document_mask`` (packed sequences),
``prefix_lm``, combined with ``and_masks`` and ``or_masks``.

The window mods are symmetric (``|q_idx - kv_idx| < window``, as the core's
``window`` argument); causality comes from ``causal=True`` or
``and_masks(causal_mask(), ...)``, so each mod states one constraint.
"""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np
from keras import ops

from attnkit import _checks

# Helpers ------------------------------------------------------------------------


def _int_tensor(x, name, rank, what):
    """``x`` as an int32 tensor (of ``rank`` unless None), or a ValueError naming ``name``."""
    try:
        tensor = ops.convert_to_tensor(x)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` must be {what}. Received: {name}={x!r:.200}") from error
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    if "int" not in dtype:
        raise ValueError(f"`{name}` must be {what}. Received: {name}.dtype={dtype}")
    if rank is not None and len(tensor.shape) != rank:
        raise ValueError(f"`{name}` must be {what}. Received: {name}.shape={tuple(tensor.shape)}")
    return ops.cast(tensor, "int32")


def _heads_of(score, num_heads, name="num_heads"):
    heads = score.shape[1]
    if isinstance(heads, int) and heads not in (1, num_heads):
        raise ValueError(
            f"`{name}` must equal the number of query heads of the scores, {heads}. "
            f"Received: {name}={num_heads}"
        )


def _expects(mod, *records):
    """Records the sizes ``mod`` was built for (``modding.check_sizes`` reads them)."""
    mod.expected_sizes = tuple(
        (argument, tuple(tensor.shape), axes) for argument, tensor, axes in records
    )
    return mod


def _expected_sizes(mods):
    return tuple(record for mod in mods for record in getattr(mod, "expected_sizes", ()))


def _check_mods(mods, name):
    if not mods:
        raise ValueError(f"`{name}` must be at least one mod. Received: {name}=()")
    for mod in mods:
        if not callable(mod):
            raise ValueError(f"`{name}` must be callables. Received: {name} holds {mod!r:.200}")


def is_additive(score_mod) -> bool:
    """Whether ``score_mod`` declares itself a pure additive bias.

    A mod marked ``score_mod.additive = True`` promises ``score_mod(s, b, h,
    q, kv, *params) == s + score_mod(0, b, h, q, kv, *params)`` with a bias
    that depends on neither ``s`` nor the batch row. ``alibi`` and
    ``t5_relative_bias`` are marked (and ``compose_scores`` of marked mods);
    a user function never is unless it sets the attribute, nothing is
    inferred. The core may then materialise the bias once, (1, H, Tq, Tv),
    and hand it to the backend's fused kernel while it fits in memory.

    Example:

    >>> from attnkit.ops.mods import alibi, compose_scores, is_additive, soft_cap
    >>> is_additive(alibi(4)), is_additive(soft_cap(50.0))
    (True, False)
    >>> is_additive(compose_scores(alibi(4), soft_cap(50.0)))
    False
    """
    return getattr(score_mod, "additive", False) is True


# ALiBi (Press, Smith, Lewis 2021) ------------------------------------------------


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi's per-head slopes ``m_h``, as Python floats.

    For ``H`` a power of two, ``m_h = 2^(-8h/H)``, ``h = 1..H`` (a geometric
    sequence starting at ``2^(-8/H)``); otherwise the slopes of the next lower
    power of two ``P`` followed by every other slope of ``2P``
    (``2^(-8h/(2P))`` for ``h = 1, 3, 5, ...``), the first ``H - P`` of them,
    as in the paper's reference code.

    Args:
        num_heads: int, the number of query heads ``H``.

    Returns:
        A list of ``num_heads`` floats in (0, 1).

    Example:

    >>> from attnkit.ops.mods import alibi_slopes
    >>> alibi_slopes(4)
    [0.25, 0.0625, 0.015625, 0.00390625]
    >>> alibi_slopes(6)[4:]
    [0.5, 0.125]
    """
    num_heads = _checks.positive_int(num_heads, "num_heads")
    power = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = [2.0 ** (-8.0 * h / power) for h in range(1, power + 1)]
    if power < num_heads:
        slopes += [2.0 ** (-8.0 * h / (2 * power)) for h in range(1, 2 * power, 2)]
    return slopes[:num_heads]


def alibi(num_heads: int):
    """ALiBi score_mod: a linear distance penalty per head (Press et al. 2021).

    ``s_ij <- s_ij - m_h · |i - j|``, with ``m_h = alibi_slopes(H)[h]`` and
    ``i = q_idx``, ``j = kv_idx`` (so a cached decoding step gets the same
    bias as the full sequence). Under a causal mask this equals the paper's
    ``m_h · (j - i)`` on every visible key; without one it is the symmetric
    (bidirectional) variant, which penalises future and past keys alike. One
    formula for both: the paper's form would reward future keys if used
    without a causal mask.

    Args:
        num_heads: int, the number of query heads ``H`` (the slopes depend on
            it; the scores' head axis must match).

    Returns:
        ``score_mod(score, batch, head, q_idx, kv_idx) -> score``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import alibi
    >>> q = np.random.randn(2, 16, 4, 8).astype("float32")
    >>> tuple(attention(q, q, q, causal=True, score_mod=alibi(4)).shape)
    (2, 16, 4, 8)

    References:
        Press, Smith, Lewis 2021, "Train Short, Test Long: Attention with
        Linear Biases Enables Input Length Extrapolation", arXiv:2108.12409.
    """
    slopes = np.asarray(alibi_slopes(num_heads), dtype=np.float64)  # (H,)

    def alibi_mod(score, batch, head, q_idx, kv_idx):
        _heads_of(score, num_heads)
        m = ops.take(ops.convert_to_tensor(slopes, score.dtype), head)  # (1, H, 1, 1)
        distance = ops.cast(ops.abs(q_idx - kv_idx), score.dtype)  # (1, 1, q, k)
        return score - m * distance

    alibi_mod.additive = True  # type: ignore[attr-defined]  # a bias of (h, q, kv): is_additive
    return alibi_mod


# T5 relative-position bias (Raffel et al. 2020) ---------------------------------


def _t5_distance_buckets(num_buckets, max_distance):
    """Bucket of each distance ``d = 0..max_distance`` in a one-sided range of
    ``num_buckets`` buckets, as Mesh TensorFlow, Hugging Face and keras-hub
    compute it (the logarithm in float32, truncated); ``d >= max_distance``
    all share the last bucket."""
    max_exact = num_buckets // 2
    d = np.arange(max_distance + 1)
    with np.errstate(divide="ignore"):
        large = np.log(d.astype(np.float32) / np.float32(max_exact))
    large = large / np.float32(math.log(max_distance / max_exact))
    large = large * np.float32(num_buckets - max_exact)
    large = max_exact + np.trunc(np.where(d < max_exact, 0, large)).astype(np.int64)
    buckets = np.where(d < max_exact, d, np.minimum(large, num_buckets - 1))
    return buckets.astype(np.int32)


def _check_t5(num_buckets, max_distance, bidirectional):
    num_buckets = _checks.positive_int(num_buckets, "num_buckets")
    max_distance = _checks.positive_int(max_distance, "max_distance")
    bidirectional = _checks.boolean(bidirectional, "bidirectional")
    if num_buckets < (4 if bidirectional else 2):
        raise ValueError(
            "`num_buckets` must be at least 4 when bidirectional (2 per direction, "
            f"half of them exact), else 2. Received: num_buckets={num_buckets}"
        )
    max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
    if max_distance <= max_exact:
        raise ValueError(
            f"`max_distance` must exceed the {max_exact} exactly-bucketed distances "
            f"(a quarter of num_buckets={num_buckets} when bidirectional, else half). "
            f"Received: max_distance={max_distance}"
        )
    return num_buckets, max_distance, bidirectional


def t5_bucket(relative_position, num_buckets=32, max_distance=128, bidirectional=True):
    """T5's bucket of each relative position ``j - i`` (key minus query).

    With ``n`` buckets per direction (``num_buckets / 2`` when bidirectional,
    the upper half for keys after the query; all of them otherwise, where
    keys after the query share bucket 0) and a distance ``d`` (``|j - i|``,
    or ``max(i - j, 0)``): ``d`` itself for ``d < n/2``, else
    ``n/2 + floor(log(d / (n/2)) / log(max_distance / (n/2)) · (n - n/2))``,
    at most ``n - 1``. The logarithm is taken in float32 as in Mesh
    TensorFlow, Hugging Face and keras-hub (precomputed per distance, so every
    backend gets the same buckets), which keeps pretrained tables valid.

    Args:
        relative_position: int tensor of ``kv_idx - q_idx``, any shape.
        num_buckets: int, buckets in all. Defaults to `32`.
        max_distance: int, distances from here on share the last bucket.
            Defaults to `128`.
        bidirectional: bool, separate buckets for keys after the query (an
            encoder); False for causal use (a decoder). Defaults to `True`.

    Returns:
        int32 tensor of buckets in ``[0, num_buckets)``, the shape of
        ``relative_position``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops.mods import t5_bucket
    >>> np.asarray(t5_bucket(np.array([-200, -12, -1, 0, 1, 12]))).tolist()
    [15, 9, 1, 0, 17, 25]
    """
    num_buckets, max_distance, bidirectional = _check_t5(num_buckets, max_distance, bidirectional)
    rel = _int_tensor(relative_position, "relative_position", None, "an integer tensor")
    one_side = num_buckets // 2 if bidirectional else num_buckets
    table = ops.convert_to_tensor(_t5_distance_buckets(one_side, max_distance))
    if bidirectional:
        offset = ops.cast(rel > 0, "int32") * one_side
        distance = ops.abs(rel)
    else:
        offset = 0
        distance = ops.maximum(-rel, 0)
    return ops.take(table, ops.minimum(distance, max_distance)) + offset


def t5_relative_bias(num_buckets=32, max_distance=128, bidirectional=True):
    """T5's learned relative-position bias as a score_mod (Raffel et al. 2020).

    ``s_ij <- s_ij + table[t5_bucket(j - i), h]`` with ``i = q_idx``,
    ``j = kv_idx``. The table of shape ``(num_buckets, H)`` is learned, so it
    is an explicit parameter: pass it as ``score_mod_params=(table,)`` and its
    gradient flows on every path (also through the chunked path's O(N)
    backward). T5 shares one table across layers; decoders use
    ``bidirectional=False``.

    Args:
        num_buckets: int, rows of the table. Defaults to `32`.
        max_distance: int, distances from here on share the last bucket.
            Defaults to `128`.
        bidirectional: bool, see ``t5_bucket``. Defaults to `True`.

    Returns:
        ``score_mod(score, batch, head, q_idx, kv_idx, table) -> score``; a
        table whose shape is not ``(num_buckets, H)`` raises a ValueError.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import t5_relative_bias
    >>> q = np.random.randn(2, 16, 4, 8).astype("float32")
    >>> table = np.zeros((32, 4), "float32")  # a keras Variable in a layer
    >>> tuple(attention(q, q, q, score_mod=t5_relative_bias(), score_mod_params=(table,)).shape)
    (2, 16, 4, 8)

    References:
        Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
        Unified Text-to-Text Transformer", arXiv:1910.10683; Shaw et al. 2018.
    """
    num_buckets, max_distance, bidirectional = _check_t5(num_buckets, max_distance, bidirectional)

    def t5_mod(score, batch, head, q_idx, kv_idx, table):
        heads = score.shape[1]
        shape = tuple(table.shape)
        if (
            len(shape) != 2
            or shape[0] != num_buckets
            or (isinstance(heads, int) and shape[1] != heads)
        ):
            raise ValueError(
                f"`table` must have shape (num_buckets, H) = ({num_buckets}, {heads}). "
                f"Received: table.shape={shape}"
            )
        bucket = t5_bucket(kv_idx - q_idx, num_buckets, max_distance, bidirectional)  # (1,1,q,k)
        flat = ops.reshape(ops.transpose(table), (-1,))  # (H * num_buckets,), head-major
        bias = ops.take(flat, head * num_buckets + bucket)  # (1, H, q, k)
        return score + ops.cast(bias, score.dtype)

    t5_mod.num_params = 1
    t5_mod.additive = True
    return t5_mod


# Soft-capping (Gemma 2) ----------------------------------------------------------


def soft_cap(cap):
    """Logit soft-capping score_mod: ``s <- c · tanh(s / c)`` (Gemma 2, 2024).

    Keeps every logit in ``(-c, c)`` smoothly; Gemma 2 uses ``c = 50`` for
    attention logits. Apply it last in ``compose_scores`` to cap the biased
    logits.

    Args:
        cap: positive finite number ``c``.

    Returns:
        ``score_mod(score, batch, head, q_idx, kv_idx) -> score``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import soft_cap
    >>> q = np.random.randn(2, 16, 4, 8).astype("float32")
    >>> tuple(attention(q, q, q, causal=True, score_mod=soft_cap(50.0)).shape)
    (2, 16, 4, 8)

    References:
        Gemma Team 2024, "Gemma 2: Improving Open Language Models at a
        Practical Size", arXiv:2408.00118.
    """
    cap = _checks.positive_number(cap, "cap")

    def soft_cap_mod(score, batch, head, q_idx, kv_idx):
        return cap * ops.tanh(score / cap)

    return soft_cap_mod


# Composing score mods ------------------------------------------------------------


def _num_params(mod):
    """How many of ``score_mod_params`` ``mod`` takes after its five arguments."""
    count = getattr(mod, "num_params", None)
    if count is not None:
        return count
    try:
        parameters = list(inspect.signature(mod).parameters.values())
    except (TypeError, ValueError):
        return 0
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        raise ValueError(
            "`mods` must declare how many params each takes: set `mod.num_params` on a "
            f"score_mod with *args. Received: mods holds {mod!r:.200}"
        )
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return max(len(positional) - 5, 0)


def compose_scores(*mods):
    """One score_mod applying ``mods`` left to right.

    ``compose_scores(f, g)(s, ...) = g(f(s, ...), ...)``. The params of the
    composed mod are the mods' params in order: each mod takes as many as it
    declares (``mod.num_params``, as ``t5_relative_bias`` sets) or, failing
    that, as many positional arguments as it has after the five of the
    convention.

    Args:
        *mods: score_mods.

    Returns:
        ``score_mod(score, batch, head, q_idx, kv_idx, *params) -> score``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import alibi, compose_scores, soft_cap, t5_relative_bias
    >>> q = np.random.randn(2, 16, 4, 8).astype("float32")
    >>> mod = compose_scores(alibi(4), t5_relative_bias(), soft_cap(50.0))
    >>> table = np.zeros((32, 4), "float32")
    >>> tuple(attention(q, q, q, causal=True, score_mod=mod, score_mod_params=(table,)).shape)
    (2, 16, 4, 8)
    """
    _check_mods(mods, "mods")
    counts = [_num_params(mod) for mod in mods]
    total = sum(counts)

    def composed(score, batch, head, q_idx, kv_idx, *params):
        if len(params) != total:
            raise ValueError(
                f"`score_mod_params` must hold the {total} params of the composed mods "
                f"({counts} each). Received: {len(params)} params"
            )
        start = 0
        for mod, count in zip(mods, counts, strict=True):
            score = mod(score, batch, head, q_idx, kv_idx, *params[start : start + count])
            start += count
        return score

    composed.num_params = total
    composed.additive = all(is_additive(mod) for mod in mods)
    composed.expected_sizes = _expected_sizes(mods)
    return composed


# Mask mods ---------------------------------------------------------------------


def causal_mask():
    """mask_mod: key ``j`` visible from query ``i`` when ``j <= i``.

    With the bottom-right ``q_idx`` this is the core's ``causal=True``.

    Returns:
        ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import causal_mask
    >>> q = np.random.randn(2, 16, 4, 8).astype("float32")
    >>> tuple(attention(q, q, q, mask_mod=causal_mask()).shape)
    (2, 16, 4, 8)
    """

    def causal_mod(batch, head, q_idx, kv_idx):
        return kv_idx <= q_idx

    return causal_mod


def sliding_window(window: int):
    """mask_mod: key ``j`` visible from query ``i`` when ``|i - j| < window``.

    Symmetric, as the core's ``window``; with ``causal=True`` (or
    ``and_masks(causal_mask(), ...)``) the query sees itself and the
    ``window - 1`` keys before it (Longformer, Mistral).

    Args:
        window: positive int.

    Returns:
        ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import sliding_window
    >>> q = np.random.randn(2, 16, 4, 8).astype("float32")
    >>> tuple(attention(q, q, q, causal=True, mask_mod=sliding_window(4)).shape)
    (2, 16, 4, 8)
    """
    window = _checks.positive_int(window, "window")

    def window_mod(batch, head, q_idx, kv_idx):
        return ops.abs(q_idx - kv_idx) < window

    return window_mod


def dilated_sliding_window(window: int, dilation: int):
    """mask_mod: a sliding window over every ``dilation``-th key (Longformer).

    Key ``j`` is visible from query ``i`` when ``|i - j|`` is a multiple of
    ``dilation`` and ``|i - j| < window · dilation``: ``window`` keys on each
    side counting the query's own, spread over ``window · dilation``
    positions. ``dilation=1`` is ``sliding_window(window)``.

    Args:
        window: positive int, visible keys per side (the query's own included).
        dilation: positive int, the gap between visible keys.

    Returns:
        ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import dilated_sliding_window
    >>> q = np.random.randn(2, 16, 4, 8).astype("float32")
    >>> tuple(attention(q, q, q, causal=True, mask_mod=dilated_sliding_window(3, 2)).shape)
    (2, 16, 4, 8)

    References:
        Beltagy, Peters, Cohan 2020, "Longformer: The Long-Document
        Transformer", arXiv:2004.05150.
    """
    window = _checks.positive_int(window, "window")
    dilation = _checks.positive_int(dilation, "dilation")

    def dilated_mod(batch, head, q_idx, kv_idx):
        distance = ops.abs(q_idx - kv_idx)
        return ops.logical_and(distance < window * dilation, ops.mod(distance, dilation) == 0)

    return dilated_mod


def sliding_window_with_sinks(window: int, num_sinks: int = 4):
    """mask_mod: StreamingLLM's window plus the first tokens (Xiao et al. 2023).

    Key ``j`` is visible from query ``i`` when ``|i - j| < window`` or
    ``j < num_sinks``: the first tokens stay visible to every query as
    attention sinks. Use it with ``causal=True`` for a language model, as in
    the paper (4 sinks).

    Args:
        window: positive int, as ``sliding_window``.
        num_sinks: non-negative int, the always-visible first keys.
            Defaults to `4`.

    Returns:
        ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import sliding_window_with_sinks
    >>> q = np.random.randn(2, 16, 4, 8).astype("float32")
    >>> mod = sliding_window_with_sinks(4, num_sinks=2)
    >>> tuple(attention(q, q, q, causal=True, mask_mod=mod).shape)
    (2, 16, 4, 8)

    References:
        Xiao et al. 2023, "Efficient Streaming Language Models with Attention
        Sinks", arXiv:2309.17453.
    """
    window = _checks.positive_int(window, "window")
    num_sinks = _checks.non_negative_int(num_sinks, "num_sinks")

    def sinks_mod(batch, head, q_idx, kv_idx):
        return ops.logical_or(ops.abs(q_idx - kv_idx) < window, kv_idx < num_sinks)

    return sinks_mod


def document_mask(segment_ids, query_segment_ids=None, *, alignment="bottom_right"):
    """mask_mod for packed sequences: query and key of the same document only.

    Key ``j`` is visible from query ``i`` when ``segment(i) == segment(j)``.
    Compose with ``causal=True`` for packed language-model batches.

    ``segment_ids`` holds the document of every key position. By default the
    queries are key positions too: ``q_idx`` indexes ``segment_ids``, which
    serves self-attention and a decoding step at the end of a cache alike
    (the step's query sits at the last key). For queries of another sequence
    (cross attention, or a cache whose segment ids you keep separately) pass
    ``query_segment_ids``: query ``i`` then reads
    ``query_segment_ids[:, q_idx - (Tv - Tq)]`` (bottom-right, the core's
    default; ``query_segment_ids[:, q_idx]`` for ``alignment="top_left"``,
    which must then match the core's ``alignment``). Give padding its own id.

    Args:
        segment_ids: int tensor (B, Tv), the document id of each key (B may
            be 1: the same packing for every example).
        query_segment_ids: int tensor (B, Tq) or None. Defaults to `None`.
        alignment: ``"bottom_right"`` or ``"top_left"``, the ``alignment``
            given to the core; only read with ``query_segment_ids``.
            Defaults to `"bottom_right"`.

    Returns:
        ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import document_mask
    >>> q = np.random.randn(2, 8, 4, 8).astype("float32")
    >>> ids = np.array([[0, 0, 0, 1, 1, 2, 2, 2], [0, 0, 0, 0, 1, 1, 1, 1]])
    >>> tuple(attention(q, q, q, causal=True, mask_mod=document_mask(ids)).shape)
    (2, 8, 4, 8)
    """
    alignment = _checks.one_of(alignment, "alignment", ("bottom_right", "top_left"))
    what = "an integer tensor of shape (B, T)"
    kv_ids = _int_tensor(segment_ids, "segment_ids", 2, what)
    if query_segment_ids is None:
        q_ids = kv_ids
    else:
        q_ids = _int_tensor(query_segment_ids, "query_segment_ids", 2, what)
        b_q, b_kv = q_ids.shape[0], kv_ids.shape[0]
        if isinstance(b_q, int) and isinstance(b_kv, int) and 1 not in (b_q, b_kv) and b_q != b_kv:
            raise ValueError(
                "`query_segment_ids` must have the batch size of `segment_ids`, "
                f"{b_kv}. Received: query_segment_ids.shape={tuple(q_ids.shape)}"
            )
    shifted = query_segment_ids is not None and alignment == "bottom_right"

    def document_mod(batch, head, q_idx, kv_idx):
        tv = ops.shape(kv_ids)[1]
        tq = ops.shape(q_ids)[1]
        q_pos = q_idx - (tv - tq) if shifted else q_idx
        q_row = batch if q_ids.shape[0] != 1 else 0 * batch  # a batch of 1 broadcasts
        kv_row = batch if kv_ids.shape[0] != 1 else 0 * batch
        q_seg = ops.take(ops.reshape(q_ids, (-1,)), q_row * tq + q_pos)  # (B, 1, q, 1)
        kv_seg = ops.take(ops.reshape(kv_ids, (-1,)), kv_row * tv + kv_idx)  # (B, 1, 1, k)
        return q_seg == kv_seg  # (B, 1, q, k)

    records = [("segment_ids", kv_ids, {0: "batch", 1: "key"})]
    if query_segment_ids is not None:
        records.append(("query_segment_ids", q_ids, {0: "batch", 1: "query"}))
    return _expects(document_mod, *records)


def prefix_lm(prefix_lengths):
    """mask_mod of a prefix language model: bidirectional prefix, causal rest.

    Key ``j`` is visible from query ``i`` when ``j < prefix_length`` or
    ``j <= i``: the prefix (an input, a prompt) attends to itself in both
    directions, the tokens after it causally, to the prefix and each other
    (Raffel et al. 2020, section 3.2.1).

    Args:
        prefix_lengths: non-negative int (every example), or an int tensor of
            shape (B,), one length per example.

    Returns:
        ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.

    Example:

    >>> import numpy as np
    >>> from attnkit.ops import attention
    >>> from attnkit.ops.mods import prefix_lm
    >>> q = np.random.randn(2, 8, 4, 8).astype("float32")
    >>> tuple(attention(q, q, q, mask_mod=prefix_lm(np.array([3, 5]))).shape)
    (2, 8, 4, 8)
    """
    if isinstance(prefix_lengths, (int, bool)):
        length = _checks.non_negative_int(prefix_lengths, "prefix_lengths")
        records = ()

        def prefix_of(batch):
            return length

    else:
        lengths = _int_tensor(
            prefix_lengths, "prefix_lengths", 1, "a non-negative int or an int tensor of shape (B,)"
        )
        records = (("prefix_lengths", lengths, {0: "batch"}),)

        def prefix_of(batch):
            return ops.take(lengths, batch)  # (B, 1, 1, 1)

    def prefix_mod(batch, head, q_idx, kv_idx):
        return ops.logical_or(kv_idx < prefix_of(batch), kv_idx <= q_idx)

    return _expects(prefix_mod, *records)


# Combinators -------------------------------------------------------------------


def and_masks(*mods):
    """mask_mod visible where every one of ``mods`` is (logical AND).

    Args:
        *mods: at least one mask_mod.

    Returns:
        ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.

    Example:

    >>> from attnkit.ops.mods import and_masks, causal_mask, document_mask, sliding_window
    >>> mod = and_masks(causal_mask(), sliding_window(256), document_mask([[0, 0, 1, 1]]))
    """
    _check_mods(mods, "mods")

    def and_mod(batch, head, q_idx, kv_idx):
        result = mods[0](batch, head, q_idx, kv_idx)
        for mod in mods[1:]:
            result = ops.logical_and(result, mod(batch, head, q_idx, kv_idx))
        return result

    and_mod.expected_sizes = _expected_sizes(mods)
    return and_mod


def or_masks(*mods):
    """mask_mod visible where any one of ``mods`` is (logical OR).

    Args:
        *mods: at least one mask_mod.

    Returns:
        ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.

    Example:

    >>> from attnkit.ops.mods import or_masks, prefix_lm, sliding_window
    >>> mod = or_masks(sliding_window(64), prefix_lm(8))
    """
    _check_mods(mods, "mods")

    def or_mod(batch, head, q_idx, kv_idx):
        result = mods[0](batch, head, q_idx, kv_idx)
        for mod in mods[1:]:
            result = ops.logical_or(result, mod(batch, head, q_idx, kv_idx))
        return result

    or_mod.expected_sizes = _expected_sizes(mods)
    return or_mod
