"""The attention core: one entry point, three interchangeable implementations.

Shape legend: B batch, Tq query length, Tv key/value length, H query heads,
Hkv key/value heads (H % Hkv == 0; G = H // Hkv), D head dim, Dv value dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keras import ops

from attnkit import _checks
from attnkit.ops import masks as masks_lib
from attnkit.ops import modding
from attnkit.ops.scores import dot_score, get_score

# A backend tensor, or anything keras.ops converts (a NumPy array): Keras ships no types.
Tensor = Any

IMPLEMENTATIONS = ("auto", "naive", "chunked", "fused")
_DOT_SCORES = ("dot", "scaled_dot")


@dataclass
class Problem:
    """A validated attention request in attnkit's internal grouped layout."""

    query: Tensor  # (B, Tq, Hkv, G, D)
    key: Tensor  # (B, Tv, Hkv, D)
    value: Tensor  # (B, Tv, Hkv, Dv)
    rank: int  # 3 or 4: the caller's layout
    num_heads: int
    num_kv_heads: int
    score_name: str | None  # None for a custom callable
    score_fn: object  # (..., Tq, D), (..., Tv, D) -> (..., Tq, Tv)
    scale: float | None  # multiplies the logits; None = 1
    mask: object  # bool, broadcastable to (B, Hkv, G, Tq, Tv), or None
    bias: object  # broadcastable to (B, Hkv, G, Tq, Tv), or None
    causal: str | None  # the alignment name when causal, else None
    alignment: str  # "bottom_right" or "top_left": where the queries sit on the key axis
    window: int | None
    score_mod: object = None  # score_mod(score, b, h, q_idx, kv_idx, *params), see ops.modding
    score_mod_params: tuple = ()  # tensors, differentiated
    mask_mod: object = None  # mask_mod(b, h, q_idx, kv_idx) -> bool
    sinks: object = None  # (Hkv, G) float32 logits joining every softmax denominator, or None
    block_mask: object = None  # a BlockMask (ops.block_mask) or None

    @property
    def has_mods(self):
        return self.score_mod is not None or self.mask_mod is not None

    def mod_indices(self, q_start=0, q_len=None, k_start=0, k_len=None):
        """(batch, head, q_idx, kv_idx) of a block, see ``ops.modding``."""
        from attnkit.ops import modding

        tq, tv = self.runtime_length("query"), self.runtime_length("key")
        return modding.block_indices(
            ops.shape(self.query)[0],
            self.num_heads,
            q_start,
            tq if q_len is None else q_len,
            k_start,
            tv if k_len is None else k_len,
            offset=self.offset,
            tq=tq,
            tv=tv,
        )

    @property
    def query_length(self):
        """Tq if static, else None (also for a JAX symbolic dimension)."""
        return _static_length(self.query)

    @property
    def key_length(self):
        """Tv if static, else None (also for a JAX symbolic dimension)."""
        return _static_length(self.key)

    @property
    def offset(self):
        return masks_lib.query_offset(
            self.runtime_length("query"), self.runtime_length("key"), self.alignment
        )

    def runtime_length(self, which):
        """Tq or Tv: the static int, else (traced with an unknown length) what
        the backend knows of it: a scalar tensor or a symbolic dimension."""
        x = self.query if which == "query" else self.key
        length = _static_length(x)
        return ops.shape(x)[1] if length is None else length

    def position_mask(self, q_start=0, q_len=None, k_start=0, k_len=None):
        """Causal/window mask for a block, shape (q_len, k_len), or None."""
        if self.causal is None and self.window is None:
            return None
        q_len = self.runtime_length("query") if q_len is None else q_len
        k_len = self.runtime_length("key") if k_len is None else k_len
        q_pos = ops.arange(q_len, dtype="int32") + (q_start + self.offset)
        k_pos = ops.arange(k_len, dtype="int32") + k_start
        return masks_lib.position_mask(
            q_pos[:, None], k_pos[None, :], causal=self.causal, window=self.window
        )

    def to_output_layout(self, out):
        """(B, Tq, Hkv, G, Dv) -> the caller's (B, Tq, [H,] Dv)."""
        shape = ops.shape(out)
        if self.rank == 3:
            return ops.reshape(out, (shape[0], shape[1], shape[4]))
        return ops.reshape(out, (shape[0], shape[1], self.num_heads, shape[4]))

    def weights_to_output_layout(self, weights):
        """(B, Hkv, G, Tq, Tv) -> (B, Tq, Tv) or (B, H, Tq, Tv)."""
        shape = ops.shape(weights)
        if self.rank == 3:
            return ops.reshape(weights, (shape[0], shape[3], shape[4]))
        return ops.reshape(weights, (shape[0], self.num_heads, shape[3], shape[4]))


def _static_length(x):
    length = x.shape[1]
    return length if isinstance(length, int) else None


def _check_dims(a, b, what, names):
    if a is not None and b is not None and a != b:
        raise ValueError(f"{what} must match. Received: {names[0]}={a} and {names[1]}={b}")


def _to_grouped(x, name, rank, heads, groups):
    """Maps a mask or bias given in the caller's layout to (B, Hkv, G, Tq, Tv)."""
    x = ops.convert_to_tensor(x)
    shape = tuple(x.shape)
    allowed = (2, 3) if rank == 3 else (2, 3, 4)
    layout = "(B, Tq, Tv)" if rank == 3 else "(B, H, Tq, Tv)"
    if len(shape) not in allowed:
        raise ValueError(
            f"`{name}` must have rank {' or '.join(map(str, allowed))} and be "
            f"broadcastable to {layout}. Received: {name}.shape={shape}"
        )
    if len(shape) == 2:  # (Tq, Tv)
        return x[None, None, None, :, :]
    if len(shape) == 3:  # (B, Tq, Tv), shared by all heads
        return x[:, None, None, :, :]
    h = shape[1]
    if h == 1:
        return x[:, :, None, :, :]
    if h != heads:
        raise ValueError(
            f"`{name}` has {h} heads on axis 1 but the query has {heads} heads. "
            f"Received: {name}.shape={shape}"
        )
    dyn = ops.shape(x)
    return ops.reshape(x, (dyn[0], heads // groups, groups, dyn[2], dyn[3]))


def _check_broadcast(x, name, batch, tq, tv):
    if x is None:
        return
    shape = tuple(x.shape)
    for dim, full, label in ((shape[0], batch, "B"), (shape[3], tq, "Tq"), (shape[4], tv, "Tv")):
        if dim is not None and full is not None and dim not in (1, full):
            raise ValueError(
                f"`{name}` does not broadcast to (B, [H,] Tq, Tv) = "
                f"({batch}, ..., {tq}, {tv}): its {label} axis has size {dim}. "
                f"Received: {name} of shape {tuple(shape)} (after adding head axes)"
            )


def prepare(
    query,
    key,
    value,
    *,
    score="scaled_dot",
    mask=None,
    causal=False,
    alignment="bottom_right",
    window=None,
    bias=None,
    scale=None,
    score_mod=None,
    score_mod_params=(),
    mask_mod=None,
    sinks=None,
    block_mask=None,
) -> Problem:
    """Validates a request and maps it to the grouped layout."""
    query = modding.float_tensor(query, "query")
    key = modding.float_tensor(key, "key")
    value = modding.float_tensor(value, "value")
    q_shape = tuple(query.shape)
    k_shape = tuple(key.shape)
    v_shape = tuple(value.shape)
    rank = len(q_shape)
    if rank not in (3, 4):
        raise ValueError(
            f"`query` must have shape (B, Tq, D) or (B, Tq, H, D). Received: query.shape={q_shape}"
        )
    for name, shape in (("key", k_shape), ("value", v_shape)):
        if len(shape) != rank:
            raise ValueError(
                f"`{name}` must have the same rank as `query` ({rank}). "
                f"Received: query.shape={q_shape}, {name}.shape={shape}"
            )
    _check_dims(q_shape[0], k_shape[0], "Batch sizes", ("query.shape[0]", "key.shape[0]"))
    _check_dims(k_shape[0], v_shape[0], "Batch sizes", ("key.shape[0]", "value.shape[0]"))
    _check_dims(k_shape[1], v_shape[1], "Key and value lengths", ("key.shape[1]", "value.shape[1]"))

    if rank == 3:
        heads = kv_heads = 1
    else:
        heads, kv_heads = q_shape[2], k_shape[2]
        _check_dims(
            kv_heads, v_shape[2], "Key and value head counts", ("key.shape[2]", "value.shape[2]")
        )
        if kv_heads is None or heads is None or kv_heads < 1 or heads % kv_heads:
            raise ValueError(
                "The number of query heads must be a multiple of the number of "
                f"key/value heads. Received: query heads={heads}, key/value "
                f"heads={kv_heads}"
            )
    groups = heads // kv_heads

    score_fn = get_score(score)
    score_name = score if isinstance(score, str) else None
    if score_name is not None:
        _check_dims(
            q_shape[-1],
            k_shape[-1],
            "Query and key feature sizes",
            ("query.shape[-1]", "key.shape[-1]"),
        )
    scale = _checks.finite_number(scale, "scale", allow_none=True)
    if score_name in _DOT_SCORES:
        # scaled_dot's 1/sqrt(D) is its default scale; an explicit scale replaces it.
        if score_name == "scaled_dot" and scale is None:
            scale = 1.0 / math.sqrt(q_shape[-1])
        score_name, score_fn = "dot", dot_score

    causal, alignment = masks_lib.causal_arguments(causal, alignment)
    window = masks_lib.validate_window(window)

    dyn_q = ops.shape(query)
    q5 = ops.reshape(query, (dyn_q[0], dyn_q[1], kv_heads, groups, q_shape[-1]))
    if rank == 3:
        key = key[:, :, None, :]
        value = value[:, :, None, :]

    if mask is not None:
        mask = ops.cast(_to_grouped(mask, "mask", rank, heads, groups), "bool")
        _check_broadcast(mask, "mask", q_shape[0], q_shape[1], k_shape[1])
    if bias is not None:
        bias = _to_grouped(bias, "bias", rank, heads, groups)
        _check_broadcast(bias, "bias", q_shape[0], q_shape[1], k_shape[1])

    for name, fn in (("score_mod", score_mod), ("mask_mod", mask_mod)):
        if fn is not None and not callable(fn):
            raise ValueError(f"`{name}` must be a callable or None. Received: {name}={fn!r:.200}")
    # Validated, and variables read into tensors (TensorFlow's custom gradient refuses them).
    score_mod_params = modding.score_mod_params(score_mod_params, score_mod)
    if sinks is not None:
        sinks = modding.float_tensor(sinks, "sinks")
        if tuple(sinks.shape) != (heads,):
            raise ValueError(
                f"`sinks` must have shape (H,) = ({heads},), one logit per query head. "
                f"Received: sinks.shape={tuple(sinks.shape)}"
            )
        sinks = ops.reshape(sinks, (kv_heads, groups))  # (Hkv, G)
    if block_mask is not None:
        from attnkit.ops.block_sparsity import check_fits

        check_fits(block_mask, q_shape[0], heads, q_shape[1], k_shape[1])
        if mask_mod is not None and mask_mod is not block_mask.mask_mod:
            raise ValueError(
                "`mask_mod` and `block_mask` disagree: pass one, or the block mask's own "
                f"mask_mod. Received: mask_mod={mask_mod!r:.100}"
            )
        mask_mod = block_mask.mask_mod
    for name, fn in (("score_mod", score_mod), ("mask_mod", mask_mod)):
        modding.check_sizes(fn, name, q_shape[0], q_shape[1], k_shape[1])

    return Problem(
        query=q5,
        key=key,
        value=value,
        rank=rank,
        num_heads=heads,
        num_kv_heads=kv_heads,
        score_name=score_name,
        score_fn=score_fn,
        scale=scale,
        mask=mask,
        bias=bias,
        causal=alignment if causal else None,
        alignment=alignment,
        window=window,
        score_mod=score_mod,
        score_mod_params=score_mod_params,
        mask_mod=mask_mod,
        sinks=sinks,
        block_mask=block_mask,
    )


def attention_weights(
    query: Tensor,
    key: Tensor,
    *,
    score: str | Callable[[Tensor, Tensor], Tensor] = "scaled_dot",
    mask: Tensor | None = None,
    causal: bool | str = False,
    alignment: str = "bottom_right",
    window: int | None = None,
    bias: Tensor | None = None,
    scale: float | None = None,
    score_mod: Callable[..., Tensor] | None = None,
    score_mod_params: Sequence[Tensor] = (),
    mask_mod: Callable[..., Tensor] | None = None,
    sinks: Tensor | None = None,
    block_mask: Any = None,
) -> Tensor:
    """Attention weights ``softmax(score(q, k) · scale + bias)`` under the masks.

    Same arguments and layouts as :func:`attention` (no value needed). Returns
    ``(B, Tq, Tv)`` for 3-D inputs and ``(B, H, Tq, Tv)`` for 4-D inputs; masked
    entries are exactly 0 and a row with nothing to attend to is all zeros. With
    ``sinks`` a row sums to less than 1 (the sink takes the rest).
    """
    from attnkit.ops import naive

    problem = prepare(
        query,
        key,
        key,
        score=score,
        mask=mask,
        causal=causal,
        alignment=alignment,
        window=window,
        bias=bias,
        scale=scale,
        score_mod=score_mod,
        score_mod_params=score_mod_params,
        mask_mod=mask_mod,
        sinks=sinks,
        block_mask=block_mask,
    )
    weights = naive.weights(problem)
    return problem.weights_to_output_layout(ops.cast(weights, problem.query.dtype))


def attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    score: str | Callable[[Tensor, Tensor], Tensor] = "scaled_dot",
    mask: Tensor | None = None,
    causal: bool | str = False,
    alignment: str = "bottom_right",
    window: int | None = None,
    bias: Tensor | None = None,
    scale: float | None = None,
    score_mod: Callable[..., Tensor] | None = None,
    score_mod_params: Sequence[Tensor] = (),
    mask_mod: Callable[..., Tensor] | None = None,
    sinks: Tensor | None = None,
    block_mask: Any = None,
    dropout: float = 0.0,
    training: bool = False,
    seed: int | Tensor | None = None,
    return_weights: bool = False,
    implementation: str = "auto",
    block_size: int | tuple[int, int] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention ``softmax(score(q, k) · scale + bias) · v`` under boolean masks.

    Layouts: ``(B, T, D)`` single head, or ``(B, T, H, D)`` multi-head (the layout
    of ``keras.ops.dot_product_attention``). ``key``/``value`` may have fewer heads
    than ``query`` (grouped-query attention: H must be a multiple of Hkv); Tq and
    Tv may differ.

    Args:
        query: ``(B, Tq, D)`` or ``(B, Tq, H, D)``.
        key: ``(B, Tv, D)`` or ``(B, Tv, Hkv, D)``.
        value: ``(B, Tv, Dv)`` or ``(B, Tv, Hkv, Dv)``.
        score: ``"dot"``, ``"scaled_dot"``, ``"cosine"`` or a callable
            ``score(q, k)`` mapping ``(..., Tq, D)`` and ``(..., Tv, D)`` to
            ``(..., Tq, Tv)`` (see ``attnkit.ops.scores``). Defaults to
            ``"scaled_dot"``.
        mask: boolean, True = may attend. Shape ``(Tq, Tv)``, ``(B, Tq, Tv)``
            (shared by all heads) or, for 4-D inputs, ``(B, H, Tq, Tv)``; any
            axis may be 1 to broadcast. Defaults to `None`.
        causal: whether query ``i`` may only attend to keys at or before its
            own position (placed by ``alignment``). Defaults to `False`.
        alignment: where the queries sit on the key axis when Tq != Tv, for
            ``causal`` and ``window``: ``"bottom_right"`` aligns the last query
            with the last key, so a one-step query at the end of a cache sees
            the whole cache; ``"top_left"`` puts query ``i`` at key position
            ``i`` (causal is then ``tril(ones(Tq, Tv))``, Keras' convention).
            Defaults to `"bottom_right"`.
        window: sliding window: key j is visible from query i when
            ``|i - j| < window`` (positions placed by ``alignment``); with
            ``causal`` it keeps the ``window`` most recent keys. Defaults to `None`.
        bias: additive logits, broadcastable like ``mask``. Defaults to `None`.
        scale: multiplies the scores; ``None`` means ``1/sqrt(D)`` for
            ``"scaled_dot"`` and 1 otherwise. Defaults to `None`.
        score_mod: ``score_mod(score, batch, head, q_idx, kv_idx,
            *score_mod_params) -> score``, written with ``keras.ops``: maps a
            block of logits (B, H, q, k) (after ``scale`` and ``bias``;
            float32, or float64 for float64 inputs) to new logits of the same
            shape. The indices are int32, broadcastable to the block: batch
            (B, 1, 1, 1), head (1, H, 1, 1) (query head h reads key/value head
            h // (H // Hkv), Keras' GroupQueryAttention layout), q_idx
            (1, 1, q, 1) in the keys' coordinates (placed by ``alignment``:
            ``i + Tv - Tq`` by default, so a mod written for a whole sequence
            also serves a decoding step at the end of a cache) and kv_idx
            (1, 1, 1, k). It must treat entries independently: the naive path
            calls it on the whole matrix, the chunked path block by block (on
            padded blocks the indices of padding are clamped to the last real
            query/key). Defaults to `None`.
        score_mod_params: tensors that ``score_mod`` takes after the indices
            (a learned bias table, per-head slopes). Pass learned parameters
            here rather than closing over them: they are differentiated,
            also through the chunked path's O(N)-memory backward, on every
            backend (``jax.custom_vjp`` cannot see a closed-over traced array).
            Defaults to `()`.
        mask_mod: ``mask_mod(batch, head, q_idx, kv_idx) -> bool`` (True = may
            attend), same indices as ``score_mod``; its result must be rank 4,
            broadcastable to (B, H, q, k). ANDed with ``mask``, ``causal`` and
            ``window``. Defaults to `None`.
        sinks: per-head sink logits of shape (H,) (gpt-oss): each joins every
            query row's softmax denominator and contributes no value, so
            ``out = sum_j exp(s_j) v_j / (exp(sink_h) + sum_j exp(s_j))``.
            Differentiated. Defaults to `None`.
        block_mask: an ``attnkit.ops.block_mask(mask_mod, ...)`` for these
            sizes: its ``mask_mod`` applies, and the chunked path skips the
            blocks it hides entirely and the mask work on the blocks it leaves
            wholly visible. Build it once, reuse it across calls and layers.
            Defaults to `None`.
        dropout: dropout rate on the weights during training (inverted
            dropout: kept weights are scaled by ``1 / (1 - dropout)``; the
            softmax is normalised before dropout). Served by the naive and
            the chunked paths, which draw the same keep-mask for the same
            seed: each weight's is a pure function of a per-call key and its
            (batch, head, query, key) indices (``attnkit.ops.counter_noise``),
            so the chunked backward regenerates it block by block in O(N)
            memory. Defaults to `0.0`.
        training: whether dropout is active. Defaults to `False`.
        seed: int or ``keras.random.SeedGenerator`` for dropout. An int gives
            the same mask on every call and on every backend; a generator is
            drawn from once per call, so calls differ and a generator built
            from a fixed seed repeats its sequence; None draws from Keras'
            global generator. Defaults to `None`.
        return_weights: also return the weights, ``(B, Tq, Tv)`` or
            ``(B, H, Tq, Tv)``, taken before dropout (naive path only).
            Defaults to `False`.
        implementation: ``"naive"`` (materialises the scores), ``"chunked"``
            (exact online softmax over blocks, O(N) memory), ``"fused"`` (the
            backend's kernel through ``keras.ops.dot_product_attention``) or
            ``"auto"`` (the fastest that supports the request). Defaults to `"auto"`.
        block_size: ``(query_block, key_block)`` for ``"chunked"``; ``None``
            picks measured defaults. Defaults to `None`.

    Returns:
        The output ``(B, Tq, Dv)`` or ``(B, Tq, H, Dv)``, and the weights when
        ``return_weights``. A query row with nothing to attend to returns zero
        weights and a zero output, never NaN.
    """
    from attnkit.ops import dispatch

    _checks.one_of(implementation, "implementation", IMPLEMENTATIONS)
    dropout = _checks.rate(dropout, "dropout")
    problem = prepare(
        query,
        key,
        value,
        score=score,
        mask=mask,
        causal=causal,
        alignment=alignment,
        window=window,
        bias=bias,
        scale=scale,
        score_mod=score_mod,
        score_mod_params=score_mod_params,
        mask_mod=mask_mod,
        sinks=sinks,
        block_mask=block_mask,
    )
    dropout_active = bool(dropout > 0 and training)
    impl = dispatch.choose(problem, implementation, return_weights, dropout_active)
    rate, dropout_key = 0.0, None
    if dropout_active and impl != "fused":
        from attnkit.ops import counter_noise

        # Drawn once per call: the keep-mask of every weight is a pure function
        # of this key and the weight's global indices (ops.counter_noise).
        rate, dropout_key = dropout, counter_noise.dropout_key(seed)
    if impl == "naive":
        from attnkit.ops import naive

        out, weights = naive.attend(
            problem, dropout=rate, dropout_key=dropout_key, return_weights=return_weights
        )
    elif impl == "chunked":
        from attnkit.ops import chunked

        out = chunked.attend(problem, block_size=block_size, dropout=rate, dropout_key=dropout_key)
        weights = None
    else:
        from attnkit.ops import fused

        out, weights = fused.attend(problem), None
    out = problem.to_output_layout(out)
    if return_weights:
        return out, problem.weights_to_output_layout(weights)
    return out
