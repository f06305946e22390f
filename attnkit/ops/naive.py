"""The materialising implementation: scores (B, Hkv, G, Tq, Tv) in memory."""

from __future__ import annotations

import keras
from keras import ops

from attnkit.ops import counter_noise, modding
from attnkit.ops.masks import combine_masks
from attnkit.ops.softmax import masked_softmax, softmax_dtype, softmax_rows, zero_rows


def prescaled_query(problem):
    """The query in the logits' dtype (at least float32), multiplied by the
    scale when the score is a dot product.

    Scaling the (Tq, D) query is cheaper than scaling the (Tq, Tv) scores. Half
    inputs are cast first: |x| <= 300 in float16 with D = 8 gives logits up to
    720,000, past float16's 65,504, although every input and the output (a
    convex combination of the values) are representable; scaling in float16
    would also round the query once more.
    """
    query = ops.cast(problem.query, softmax_dtype(problem.query.dtype))
    if problem.score_name == "dot" and problem.scale is not None:
        return query * ops.cast(problem.scale, query.dtype)
    return query


def logits(problem, query, key):
    """Scores of ``prescaled_query`` blocks against key blocks, at least float32.

    ``query`` (B, Hkv, G, Tq, D) and ``key`` (B, Hkv, Tv, D), head-major, as the
    chunked implementation's blocks are, so both implementations compute
    exactly the same function; a score callable sees (B, Hkv, G, Tq, D) against
    (B, Hkv, 1, Tv, D). Returns (B, Hkv, G, Tq_block, Tv_block).
    """
    dtype = softmax_dtype(query.dtype)
    key = ops.cast(key, dtype)  # the query is already (prescaled_query)
    scores = ops.cast(problem.score_fn(ops.cast(query, dtype), key[:, :, None]), dtype)
    if problem.scale is not None and problem.score_name != "dot":
        scores = scores * problem.scale
    return scores


def weights(problem):
    """Softmax weights (B, Hkv, G, Tq, Tv) in at least float32."""
    return zero_rows(*weights_and_rows(problem))


def weights_and_rows(problem):
    """``softmax.softmax_rows`` of the problem's scores: the weights before rows
    without a visible key are zeroed, and those rows (or None)."""
    query = ops.transpose(prescaled_query(problem), (0, 2, 3, 1, 4))  # (B, Hkv, G, Tq, D)
    key = ops.transpose(problem.key, (0, 2, 1, 3))  # (B, Hkv, Tv, D)
    scores = logits(problem, query, key)  # (B, Hkv, G, Tq, Tv)
    if problem.bias is not None:
        scores = scores + ops.cast(problem.bias, scores.dtype)
    mask = combine_masks(problem.mask, problem.position_mask())
    if problem.has_mods:
        idx = problem.mod_indices()
        if problem.score_mod is not None:
            scores = modding.apply_score_mod(
                problem.score_mod, scores, idx, problem.score_mod_params
            )
        if problem.mask_mod is not None:
            groups = problem.num_heads // problem.num_kv_heads
            mod_mask = modding.evaluate_mask_mod(problem.mask_mod, idx, problem.num_heads, groups)
            mask = combine_masks(mask, mod_mask)
    # Built-in scores of finite inputs are finite; a bias, a score_mod or a
    # custom score may hide keys with -inf.
    finite = problem.bias is None and problem.score_mod is None and problem.score_name is not None
    if problem.sinks is None:
        return softmax_rows(scores, mask, axis=-1, finite=finite)
    return _softmax_with_sinks(scores, mask, ops.cast(problem.sinks, scores.dtype))


def _softmax_with_sinks(scores, mask, sinks):
    """masked_softmax with one more logit per head, ``sinks`` (Hkv, G), that
    joins the denominator and is dropped from the weights; (weights, None)."""
    shape = ops.shape(scores)
    column = ops.broadcast_to(sinks[None, :, :, None, None], (*shape[:4], 1))  # (B, Hkv, G, Tq, 1)
    extended = ops.concatenate([scores, column], axis=-1)  # (B, Hkv, G, Tq, Tv + 1)
    if mask is not None:
        mask = ops.broadcast_to(mask, shape)
        mask = ops.concatenate([mask, ops.ones_like(mask[..., :1])], axis=-1)
    return masked_softmax(extended, mask, axis=-1)[..., :-1], None


def attend(problem, dropout=0.0, dropout_key=None, return_weights=True):
    """Returns (output (B, Tq, Hkv, G, Dv), weights (B, Hkv, G, Tq, Tv) or None
    without ``return_weights``).

    With ``dropout`` > 0 the weights that reach the values are multiplied by
    ``counter_noise.dropout_factor`` of ``dropout_key`` (inverted dropout,
    the keep-mask a pure function of the key and each weight's global
    indices: the chunked path draws the same one); the returned weights are
    those before dropout. Rows without a visible key are zeroed in the output
    (B·Tq·H·Dv values, not B·H·Tq·Tv weights) and in the returned weights.
    """
    w, keep = weights_and_rows(problem)
    value = problem.value
    compute_dtype = keras.backend.result_type(problem.query.dtype, value.dtype)
    returned = None
    if return_weights:
        returned = ops.cast(zero_rows(w, keep), compute_dtype)
    if dropout > 0:
        rows = counter_noise.dropout_rows(
            dropout_key,
            ops.shape(problem.query)[0],
            problem.num_heads,
            problem.num_kv_heads,
            0,
            problem.runtime_length("query"),
        )  # (B, Hkv, G, Tq)
        w = w * counter_noise.dropout_factor(
            rows, dropout, 0, problem.runtime_length("key"), w.dtype
        )  # (B, Hkv, G, Tq, Tv)
    w = ops.cast(w, compute_dtype)
    out = ops.einsum("bhgqk,bkhd->bqhgd", w, ops.cast(value, compute_dtype))  # (B, Tq, Hkv, G, Dv)
    if keep is not None:
        while len(keep.shape) < 5:  # a (Tq, 1) position mask's rows
            keep = keep[None]
        # (B|1, Hkv|1, G|1, Tq|1, 1) -> (B|1, Tq|1, Hkv|1, G|1, 1), as the output.
        out = out * ops.cast(ops.transpose(keep, (0, 3, 1, 2, 4)), out.dtype)
    return out, returned
