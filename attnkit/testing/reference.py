"""Float64 NumPy references of every attnkit computation, written from the equations.

The one place the test suite takes its expected values from. Deliberately
independent of ``attnkit.ops``: plain NumPy in float64, loops where the paper
writes a recursion, explicitly built boolean masks (True = may attend). A row
with nothing to attend to gets all-zero weights, as in attnkit.

Shape legend: B batch, Tq query length, Tv key/value length, H heads, Hkv
key/value heads, D feature size, U attention width, Q learned queries.

- masks: ``reference_mask``, ``reference_padding_mask``
- softmax: ``reference_softmax``, ``reference_masked_softmax``
- scores ``(..., Tq, D), (..., Tv, D) -> (..., Tq, Tv)``: dot, scaled dot,
  cosine, general (Luong), additive (Bahdanau), concat (Keras)
- attention: ``reference_attention`` (the core, heads and grouped heads),
  ``reference_attention_gradients``, ``reference_attend`` (weights from scores),
  ``reference_bahdanau_attention``, ``reference_concat_attention``
- local (Luong 2015): positions, Gaussian-window weights and attention
- pooling (Yang 2016, Raffel & Ellis 2015): scores, weights, the pool
- hard: argmax, top-k, Gumbel-softmax (given the noise)
- alignment recursions: monotonic (Raffel 2017), forward (Zhang 2018),
  location features (Chorowski 2015)
- recurrent decoder pieces: Luong and Bahdanau energies, Keras' GRU step
- counter-based noise: the hash and Box-Muller in uint32/float64
"""

from __future__ import annotations

import math

import numpy as np


def _f64(*arrays):
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# Masks ----------------------------------------------------------------------


def reference_mask(tq, tv, *, causal=False, window=None, alignment=None):
    """(Tq, Tv) boolean mask from causal alignment and window, True = attend.

    ``causal`` is a bool or an alignment name (``"bottom_right"``, the default,
    or ``"top_left"``); ``alignment`` places the queries for a window without
    ``causal`` too (default: ``causal``'s alignment, else bottom-right).
    """
    if causal is True:
        causal = "bottom_right"
    if alignment is None:
        alignment = causal if isinstance(causal, str) else "bottom_right"
    offset = 0 if alignment == "top_left" else tv - tq
    i = np.arange(tq)[:, None] + offset
    j = np.arange(tv)[None, :]
    mask = np.ones((tq, tv), dtype=bool)
    if causal:
        mask &= j <= i
    if window is not None:
        mask &= np.abs(i - j) < window
    return mask


def reference_padding_mask(lengths, max_length):
    """(B, T) mask, True for the first ``lengths[b]`` steps of row b."""
    return np.arange(max_length)[None, :] < np.asarray(lengths)[:, None]


# Softmax --------------------------------------------------------------------


def reference_softmax(x, axis=-1):
    """Plain float64 softmax over ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def reference_masked_softmax(logits, mask=None, axis=-1):
    """Float64 softmax over ``axis`` where ``mask``; a row with nothing visible is all zeros.

    ``mask`` broadcasts against ``logits``; logits of -inf (from a bias) get
    weight 0 like masked ones.
    """
    x = np.asarray(logits, dtype=np.float64)
    if mask is None:
        mask = np.ones(x.shape, bool)
    x, mask = np.broadcast_arrays(x, np.asarray(mask, bool))
    s = np.where(mask, x, -np.inf)
    top = np.max(s, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(mask, np.exp(s - top), 0.0)
    total = e.sum(axis=axis, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)


# Scores: (..., Tq, D) and (..., Tv, D) -> (..., Tq, Tv) ----------------------


def reference_dot_score(query, key):
    """Luong 2015 "dot": ``qᵀk``."""
    q, k = _f64(query, key)
    return q @ np.swapaxes(k, -1, -2)


def reference_scaled_dot_score(query, key):
    """Vaswani 2017: ``qᵀk / sqrt(D)``."""
    return reference_dot_score(query, key) / np.sqrt(np.shape(query)[-1])


def _l2_normalize(x):
    # |x| clipped at 1e-6 (a squared norm at 1e-12): a zero vector scores 0.
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def reference_cosine_score(query, key):
    """``(q/|q|)ᵀ(k/|k|)``."""
    q, k = _f64(query, key)
    return reference_dot_score(_l2_normalize(q), _l2_normalize(k))


def reference_general_score(query, key, kernel):
    """Luong 2015 "general": ``qᵀ W k`` with ``W`` (Dq, Dk)."""
    q, kernel = _f64(query, kernel)
    return reference_dot_score(q @ kernel, key)


def reference_additive_score(query, key, v, scale=None):
    """Bahdanau 2014 over projected inputs (width U): ``vᵀ tanh(q_i + k_j)``, v times ``scale``."""
    q, k, v = _f64(query, key, v)
    if scale is not None:
        v = v * np.asarray(scale, np.float64)
    hidden = np.tanh(q[..., :, None, :] + k[..., None, :, :])  # (..., Tq, Tv, U)
    return hidden @ v


def reference_concat_score(query, key, scale, weight):
    """Keras ``Attention(score_mode="concat")``: ``c · Σ_d tanh(s · (q_d + k_d))``."""
    q, k = _f64(query, key)
    return weight * np.tanh(scale * (q[..., :, None, :] + k[..., None, :, :])).sum(-1)


# Attention --------------------------------------------------------------------


def reference_attend(scores, value, mask=None):
    """(output, weights): masked softmax of ``scores`` (..., Tq, Tv), then the weighted sum."""
    weights = reference_masked_softmax(scores, mask)
    return weights @ np.asarray(value, np.float64), weights


def reference_bahdanau_attention(query, key, value, query_kernel, key_kernel, bias, v, mask=None):
    """Bahdanau 2014: ``e_ij = vᵀ tanh(W_q q_i + b + W_k k_j)``, masked softmax, weighted sum."""
    q, k, query_kernel, key_kernel, bias = _f64(query, key, query_kernel, key_kernel, bias)
    return reference_attend(
        reference_additive_score(q @ query_kernel + bias, k @ key_kernel, v), value, mask
    )


def reference_concat_attention(query, key, value, scale, weight, mask=None):
    """Keras' "concat" attention: ``reference_concat_score``, masked softmax, weighted sum."""
    return reference_attend(reference_concat_score(query, key, scale, weight), value, mask)


def _to_bhqk(x, rank, heads):
    """Caller-layout mask/bias -> (B|1, H, Tq, Tv)."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[:, None]
    return np.broadcast_to(x, (x.shape[0], heads) + x.shape[2:]) if x.shape[1] == 1 else x


def reference_mod_indices(b, h, tq, tv, alignment=None):
    """The four index arrays of the score_mod/mask_mod convention (int64):
    batch (B, 1, 1, 1), head (1, H, 1, 1), q_idx (1, 1, Tq, 1) in the keys'
    coordinates (``i + Tv - Tq`` bottom-right, ``i`` top-left), kv_idx (1, 1, 1, Tv)."""
    offset = 0 if alignment == "top_left" else tv - tq
    return (
        np.arange(b).reshape(-1, 1, 1, 1),
        np.arange(h).reshape(1, -1, 1, 1),
        (np.arange(tq) + offset).reshape(1, 1, -1, 1),
        np.arange(tv).reshape(1, 1, 1, -1),
    )


def _reference_logits_and_mask(
    q, k, score, scale, mask, causal, alignment, window, bias, rank, score_mod, params, mask_mod
):
    """(scores (B, H, Tq, Tv) after bias and score_mod, the scores before the
    score_mod, mask (B, H, Tq, Tv)) in float64, from (B, T, H, D) inputs."""
    b, tq, h, d = q.shape
    tv, group = k.shape[1], h // k.shape[2]
    kh = np.repeat(k, group, axis=2)  # (B, Tv, H, D): query head h reads k head h // G
    if score == "cosine":
        q, kh = _l2_normalize(q), _l2_normalize(kh)
    s = np.einsum("bqhd,bkhd->bhqk", q, kh) * scale  # (B, H, Tq, Tv)
    if bias is not None:
        s = s + _to_bhqk(np.asarray(bias, dtype=np.float64), rank, h)
    full = reference_mask(tq, tv, causal=causal, window=window, alignment=alignment)[None, None]
    if mask is not None:
        full = full & _to_bhqk(mask, rank, h)
    align = alignment or (causal if isinstance(causal, str) else "bottom_right")
    idx = reference_mod_indices(b, h, tq, tv, align)
    raw = s
    if score_mod is not None:
        s = np.asarray(score_mod(s, *idx, *params), dtype=np.float64)
    if mask_mod is not None:
        full = full & np.asarray(mask_mod(*idx), dtype=bool)
    return s, raw, np.broadcast_to(full, (b, h, tq, tv)), idx


def _reference_softmax_with_sinks(s, mask, sinks):
    """Masked softmax over the last axis with per-head sink logits (H,) in the
    denominator; returns (weights, sink weights (B, H, Tq))."""
    if sinks is None:
        return reference_masked_softmax(s, mask), None
    b, h, tq, _ = s.shape
    column = np.broadcast_to(np.asarray(sinks, np.float64).reshape(1, h, 1, 1), (b, h, tq, 1))
    extended = np.concatenate([s, column], axis=-1)
    ext_mask = np.concatenate([mask, np.ones((b, h, tq, 1), bool)], axis=-1)
    w = reference_masked_softmax(extended, ext_mask)
    return w[..., :-1], w[..., -1]


def reference_attention(
    query,
    key,
    value,
    *,
    score="scaled_dot",
    mask=None,
    causal=False,
    alignment=None,
    window=None,
    bias=None,
    scale=None,
    score_mod=None,
    score_mod_params=(),
    mask_mod=None,
    sinks=None,
):
    """Returns (output, weights) in float64, layouts as ``attnkit.ops.attention``
    (``causal`` may also be an alignment name, see ``reference_mask``).

    ``score_mod(score, b, h, q_idx, kv_idx, *score_mod_params)`` and
    ``mask_mod(b, h, q_idx, kv_idx)`` are NumPy functions of the core's
    convention (``reference_mod_indices``), applied to the (B, H, Tq, Tv)
    logits after scale and bias; ``sinks`` (H,) joins every denominator."""
    q = np.asarray(query, dtype=np.float64)
    k = np.asarray(key, dtype=np.float64)
    v = np.asarray(value, dtype=np.float64)
    rank = q.ndim
    if rank == 3:
        q, k, v = q[:, :, None], k[:, :, None], v[:, :, None]
    d = q.shape[-1]
    if scale is None:
        scale = 1.0 / np.sqrt(d) if score == "scaled_dot" else 1.0
    params = _f64(*score_mod_params)
    s, _, full, _ = _reference_logits_and_mask(
        q, k, score, scale, mask, causal, alignment, window, bias, rank, score_mod, params, mask_mod
    )
    weights, _ = _reference_softmax_with_sinks(s, full, sinks)
    group = q.shape[2] // k.shape[2]
    out = np.einsum("bhqk,bkhd->bqhd", weights, np.repeat(v, group, axis=2))
    if rank == 3:
        return out[:, :, 0], weights[:, 0]
    return out, weights


def reference_multi_head_attention(weights, query, value, key=None, **kwargs):
    """Multi-head attention in float64 from a layer's ``weights``.

    ``weights`` maps ``"query/kernel"``, ``"query/bias"``, ... ``"attention_output/bias"``
    (keras.layers.MultiHeadAttention's names, kernels (D, H, Dk) and (H, Dv, Dout)) to
    arrays; ``kwargs`` as ``reference_attention`` (scaled dot-product scores). Returns
    ``(output (B, Tq, Dout), weights (B, H, Tq, Tv))``.
    """
    w = {name: np.asarray(x, dtype=np.float64) for name, x in weights.items()}
    key = value if key is None else key

    def project(x, name):
        out = np.einsum("btd,dhk->bthk", np.asarray(x, np.float64), w[f"{name}/kernel"])
        return out + w[f"{name}/bias"]

    qh, kh, vh = project(query, "query"), project(key, "key"), project(value, "value")
    out, attention_weights = reference_attention(qh, kh, vh, score="scaled_dot", **kwargs)
    out = np.einsum("bthv,hvo->bto", out, w["attention_output/kernel"])
    return out + w["attention_output/bias"], attention_weights


def reference_attention_gradients(
    query, key, value, cotangent, *, score_mod_vjp=None, return_extras=False, **kwargs
):
    """d sum(attention(q, k, v) * g) / d(q, k, v) in float64, from the equations.

    ``dV = Pᵀ G``, ``dP = G Vᵀ``, ``dS = P ⊙ (dP - rowsum(dP ⊙ P))``,
    ``dQ = c dS K``, ``dK = c dSᵀ Q``, for the dot and scaled-dot scores (c the
    scale); ``kwargs`` as ``reference_attention`` (masks, bias, scale, mods,
    sinks). With a ``score_mod``, ``score_mod_vjp(raw, b, h, q_idx, kv_idx,
    *params, d_mod) -> (d_raw, d_params)`` is its hand-derived derivative: the
    chain rule takes ``dS`` through it. A sink logit has value 0, so
    ``d sink_h = -sum P_sink · rowsum(dP ⊙ P)``. With ``return_extras`` returns
    ``(dq, dk, dv, d_sinks or None, d_params)``.
    """
    score = kwargs.get("score", "scaled_dot")
    if score not in ("dot", "scaled_dot"):
        raise ValueError(
            f"Gradients are derived for the dot and scaled-dot scores. Received: score={score!r}"
        )
    q, k, v, g = _f64(query, key, value, cotangent)
    squeeze = q.ndim == 3
    if squeeze:
        q, k, v, g = (t[:, :, None] for t in (q, k, v, g))
    h, d = q.shape[2], q.shape[3]
    group = h // k.shape[2]
    scale = kwargs.get("scale")
    if scale is None:
        scale = 1.0 / np.sqrt(d) if score == "scaled_dot" else 1.0
    params = _f64(*kwargs.get("score_mod_params", ()))
    s, raw, full, idx = _reference_logits_and_mask(
        q,
        k,
        score,
        scale,
        kwargs.get("mask"),
        kwargs.get("causal", False),
        kwargs.get("alignment"),
        kwargs.get("window"),
        kwargs.get("bias"),
        4,
        kwargs.get("score_mod"),
        params,
        kwargs.get("mask_mod"),
    )
    sinks = kwargs.get("sinks")
    p, p_sink = _reference_softmax_with_sinks(s, full, sinks)  # (B, H, Tq, Tv)
    vh = np.repeat(v, group, axis=2)  # (B, Tv, H, Dv)
    kh = np.repeat(k, group, axis=2)
    dvh = np.einsum("bhqk,bqhd->bkhd", p, g)
    dp = np.einsum("bqhd,bkhd->bhqk", g, vh)
    delta = np.sum(dp * p, axis=-1, keepdims=True)  # (B, H, Tq, 1)
    ds = p * (dp - delta)
    d_params = ()
    if kwargs.get("score_mod") is not None:
        ds, d_params = score_mod_vjp(raw, *idx, *params, ds)
    dq = scale * np.einsum("bhqk,bkhd->bqhd", ds, kh)
    dkh = scale * np.einsum("bhqk,bqhd->bkhd", ds, q)
    b, tv = k.shape[0], k.shape[1]
    dk = dkh.reshape(b, tv, h // group, group, d).sum(axis=3)
    dv = dvh.reshape(b, tv, h // group, group, v.shape[-1]).sum(axis=3)
    d_sinks = None if sinks is None else -np.sum(p_sink * delta[..., 0], axis=(0, 2))
    if squeeze:
        dq, dk, dv = dq[:, :, 0], dk[:, :, 0], dv[:, :, 0]
    if return_extras:
        return dq, dk, dv, d_sinks, tuple(d_params)
    return dq, dk, dv


# Local attention (Luong, Pham, Manning 2015) ------------------------------------


def reference_monotonic_positions(query_length, key_length):
    """local-m's ``p_t`` (Tq,): ``t · (Tv - 1) / (Tq - 1)``, ``t`` when Tq == Tv."""
    return np.arange(query_length) * (key_length - 1) / max(query_length - 1, 1)


def reference_predictive_positions(query, position_kernel, position_vector, key_length):
    """local-p's ``p_t = Tv · sigmoid(v_pᵀ tanh(W_p h_t))`` (B, Tq); ``key_length`` broadcasts."""
    q, position_kernel, position_vector = _f64(query, position_kernel, position_vector)
    logit = np.tanh(q @ position_kernel) @ position_vector  # (B, Tq)
    return np.asarray(key_length, np.float64) * _sigmoid(logit)


def reference_local_weights(scores, positions, window, *, sigma=None, mask=None):
    """``a_t(s) = softmax_{|s - p_t| <= D}(score) · exp(-(s - p_t)² / 2σ²)``, σ = D/2 by default.

    ``scores`` (B, Tq, Tv), ``positions`` (Tq,) or (B, Tq), ``mask``
    broadcastable to the scores; zero outside the window, not renormalised.
    """
    scores = np.asarray(scores, np.float64)
    sigma = window / 2.0 if sigma is None else sigma
    s = np.arange(scores.shape[-1])[None, None, :]
    p = np.broadcast_to(np.asarray(positions, np.float64), scores.shape[:-1])[..., None]
    keep = np.abs(s - p) <= window
    if mask is not None:
        keep = keep & np.asarray(mask, bool)
    align = reference_masked_softmax(scores, keep)
    return align * np.exp(-((s - p) ** 2) / (2 * sigma**2))


def reference_local_attention(scores, value, positions, window, *, sigma=None, mask=None):
    """(output, weights): ``c_t = Σ_s a_t(s) h̄_s`` with ``reference_local_weights``."""
    a = reference_local_weights(scores, positions, window, sigma=sigma, mask=mask)
    return a @ np.asarray(value, np.float64), a


# Attention pooling (Yang et al. 2016; Raffel & Ellis 2015) ------------------------


def reference_han_scores(inputs, kernel, context, bias=None):
    """Yang 2016: ``e_qt = u_qᵀ tanh(W h_t + b)``; inputs (B, T, D) -> (B, Q, T)."""
    h, kernel, context = _f64(inputs, kernel, context)
    hidden = h @ kernel
    if bias is not None:
        hidden = hidden + np.asarray(bias, np.float64)
    return np.einsum("btu,uq->bqt", np.tanh(hidden), context)


def reference_feedforward_scores(inputs, kernel, bias=None):
    """Raffel & Ellis 2015: ``e_qt = tanh(w_qᵀ h_t + b_q)``; (B, T, D) -> (B, Q, T)."""
    h, kernel = _f64(inputs, kernel)
    e = np.einsum("btd,dq->bqt", h, kernel)
    if bias is not None:
        e = e + np.asarray(bias, np.float64)[None, :, None]
    return np.tanh(e)


def reference_pooling_weights(scores, mask=None):
    """Softmax over time of (B, Q, T) scores; ``mask`` (B, T)."""
    return reference_masked_softmax(scores, None if mask is None else np.asarray(mask)[:, None, :])


def reference_attention_pool(inputs, scores, mask=None):
    """(output (B, Q, D), weights (B, Q, T)): ``out_q = Σ_t α_qt h_t``."""
    alpha = reference_pooling_weights(scores, mask)
    return np.einsum("bqt,btd->bqd", alpha, np.asarray(inputs, np.float64)), alpha


# Hard attention -----------------------------------------------------------------


def _visible(scores, mask):
    scores = np.asarray(scores, np.float64)
    mask = np.ones(scores.shape, bool) if mask is None else np.asarray(mask, bool)
    return np.broadcast_arrays(scores, mask)


def reference_argmax_weights(scores, mask=None):
    """One-hot of the highest visible score of each row (..., Tv); zeros with none visible."""
    scores, mask = _visible(scores, mask)
    best = np.argmax(np.where(mask, scores, -np.inf), axis=-1)
    one_hot = np.arange(scores.shape[-1]) == best[..., None]
    return (one_hot & mask).astype(np.float64)


def reference_topk_weights(scores, k, mask=None, *, temperature=1.0):
    """Softmax of ``scores / τ`` over the ``k`` highest visible scores of each row; 0 elsewhere."""
    scores, mask = _visible(scores, mask)
    order = np.argsort(-np.where(mask, scores, -np.inf), axis=-1, kind="stable")
    keep = np.zeros(scores.shape, bool)
    np.put_along_axis(keep, order[..., :k], True, axis=-1)
    return reference_masked_softmax(scores / temperature, keep & mask)


def reference_gumbel_softmax_weights(scores, noise, mask=None, *, temperature=1.0, hard=True):
    """Jang 2016 given the Gumbel ``noise``: ``softmax((s + g) / τ)``, one-hot with ``hard``."""
    scores, mask = _visible(scores, mask)
    noisy = scores + np.asarray(noise, np.float64)
    if hard:
        return reference_argmax_weights(noisy, mask)
    return reference_masked_softmax(noisy / temperature, mask)


# Alignment recursions -----------------------------------------------------------


def reference_monotonic_expected(p, prev):
    """Raffel et al. 2017 eq. 9-10, loop over j.

    ``q_j = (1 - p_{j-1}) q_{j-1} + α'_j`` (``q_0 = α'_0``), ``α_j = p_j q_j``.
    """
    p, prev = _f64(p, prev)
    b, t = p.shape
    alpha = np.zeros((b, t))
    for n in range(b):
        q = 0.0
        for j in range(t):
            q = (1 - p[n, j - 1]) * q + prev[n, j] if j else prev[n, 0]
            alpha[n, j] = p[n, j] * q
    return alpha


def reference_forward_attention(energies, prev, mask=None, u=None):
    """Zhang, Ling, Dai 2018: ``α̂_t = (α̂_{t-1} + shift(α̂_{t-1})) ⊙ y_t``, renormalised.

    ``y_t`` is the masked softmax of the energies; with the transition agent's
    ``u`` (B, 1) the prior is ``(1 - u) α̂_{t-1} + u shift(α̂_{t-1})``.
    """
    prev = np.asarray(prev, np.float64)
    y = reference_masked_softmax(energies, mask)
    shifted = np.concatenate([np.zeros_like(prev[:, :1]), prev[:, :-1]], -1)
    prior = prev + shifted if u is None else (1 - u) * prev + u * shifted
    a = prior * y
    total = a.sum(-1, keepdims=True)
    return np.where(total > 0, a / np.where(total > 0, total, 1.0), 0.0)


def reference_location_features(alignment, kernel):
    """Chorowski 2015's 'same' 1-D convolution of (B, T) alignments with (K, 1, F) filters.

    Feature j sees ``alignment[j - (K-1)//2 .. j + K//2]``; returns (B, T, F).
    """
    a, kernel = _f64(alignment, kernel)
    k = kernel.shape[0]
    left = (k - 1) // 2
    padded = np.pad(a, [(0, 0), (left, k - 1 - left)])
    return np.stack([padded[:, j : j + k] @ kernel[:, 0, :] for j in range(a.shape[1])], 1)


# Recurrent decoder pieces ---------------------------------------------------------


def reference_luong_energies(query, memory, memory_kernel=None, scale=1.0):
    """Luong 2015 for one step: query (B, D), memory (B, Tv, Dm) -> (B, Tv).

    "general" with ``memory_kernel`` (Dm, D), "dot" without; times ``scale``.
    """
    q, keys = _f64(query, memory)
    if memory_kernel is not None:
        keys = keys @ np.asarray(memory_kernel, np.float64)
    return np.einsum("bd,bkd->bk", q, keys) * scale


def reference_bahdanau_energies(query, memory, query_kernel, memory_kernel, v, g=None, b=None):
    """Bahdanau 2014 for one step: ``vᵀ tanh(W_q q + b + W_m m_j)`` (B, Tv).

    With ``g`` the weight-normalised form (Salimans 2016): ``v = g · v / |v|``.
    """
    q, memory, query_kernel, memory_kernel, v = _f64(query, memory, query_kernel, memory_kernel, v)
    if g is not None:
        v = np.asarray(g, np.float64) * v / np.linalg.norm(v)
    bias = 0.0 if b is None else np.asarray(b, np.float64)
    hidden = np.tanh((q @ query_kernel + bias)[:, None, :] + memory @ memory_kernel)
    return hidden @ v


def reference_gru_step(x, h, kernel, recurrent_kernel, bias):
    """One step of Keras' GRUCell in its ``reset_after`` form; bias (2, 3U)."""
    x, h, kernel, recurrent_kernel, bias = _f64(x, h, kernel, recurrent_kernel, bias)
    units = h.shape[-1]
    xz = x @ kernel + bias[0]
    hz = h @ recurrent_kernel + bias[1]
    z = _sigmoid(xz[:, :units] + hz[:, :units])
    r = _sigmoid(xz[:, units : 2 * units] + hz[:, units : 2 * units])
    candidate = np.tanh(xz[:, 2 * units :] + r * hz[:, 2 * units :])
    return z * h + (1 - z) * candidate


# Counter-based noise ----------------------------------------------------------------


def _mix(x):
    x = np.asarray(x, np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def reference_counter_normal(state, length):
    """``attnkit.ops.counter_noise``'s generator in NumPy uint32 arithmetic, float64 Box-Muller.

    ``state`` (B, 5) holds base-256 digits: three of the seed, two of the
    step counter; returns (B, length) standard normal samples.
    """
    s = np.rint(state).astype(np.int64)
    seed = (s[:, 0] + 256 * s[:, 1] + 65536 * s[:, 2]).astype(np.uint32)
    counter = (s[:, 3] + 256 * s[:, 4]).astype(np.uint32)
    key = _mix(_mix(seed) ^ counter)
    pos = np.arange(length, dtype=np.uint32) * np.uint32(0x9E3779B)
    key = _mix(key[:, None] ^ pos[None, :])

    def uniform(stream):
        bits = _mix(key ^ np.uint32((stream * 0x27D4EB2F) & 0xFFFFFFFF)) >> np.uint32(8)
        return (bits.astype(np.float64) + 0.5) / 2**24

    u1, u2 = uniform(1), uniform(2)
    return np.sqrt(-2 * np.log(u1)) * np.cos(2 * math.pi * u2)
