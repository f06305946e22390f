"""Float64 NumPy references for ``attnkit.explain``, written from the equations.

Independent of the code they check: loops instead of matrix products for the
rollout, a dense Edmonds–Karp max-flow instead of ``explain``'s Dinic on
adjacency lists, and the gradients of a small classifier derived by hand.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def _augment(weights, head_fusion="mean", residual_weight=0.5):
    """(B, H, T, T) or (B, T, T) -> (B, T, T): fused heads, residual, rows renormalised."""
    w = np.asarray(weights, np.float64)
    if w.ndim == 3:
        w = w[:, None]
    fused = {"mean": w.mean(1), "max": w.max(1), "min": w.min(1)}[head_fusion]
    batch, t, _ = fused.shape
    out = np.zeros_like(fused)
    for b in range(batch):
        for i in range(t):
            row = [
                (1 - residual_weight) * fused[b, i, j] + residual_weight * (i == j)
                for j in range(t)
            ]
            total = sum(row)
            out[b, i] = [x / total if total > 0 else 0.0 for x in row]
    return out


def reference_rollout(maps, head_fusion="mean", residual_weight=0.5):
    """Ã_L · … · Ã_1 with explicit sums, maps a list in layer order."""
    layers = [_augment(w, head_fusion, residual_weight) for w in maps]
    batch, t, _ = layers[0].shape
    result = layers[0].copy()
    for a in layers[1:]:
        nxt = np.zeros_like(result)
        for b in range(batch):
            for i in range(t):
                for j in range(t):
                    nxt[b, i, j] = sum(a[b, i, k] * result[b, k, j] for k in range(t))
        result = nxt
    return result


def reference_max_flow(capacity, source, sink, eps=1e-12):
    """Edmonds–Karp on a dense (N, N) capacity matrix: shortest augmenting paths."""
    residual = np.array(capacity, np.float64)
    n, total = residual.shape[0], 0.0
    while True:
        parent = [-1] * n
        parent[source] = source
        queue = deque([source])
        while queue and parent[sink] < 0:
            u = queue.popleft()
            for v in range(n):
                if parent[v] < 0 and residual[u, v] > eps:
                    parent[v] = u
                    queue.append(v)
        if parent[sink] < 0:
            return total
        path, v = [], sink
        while v != source:
            path.append((parent[v], v))
            v = parent[v]
        sent = min(residual[u, v] for u, v in path)
        for u, v in path:
            residual[u, v] -= sent
            residual[v, u] += sent
        total += sent


def reference_flow(maps, head_fusion="mean", residual_weight=0.5):
    """Attention flow: max-flow from (layer L, i) to (layer 0, j) in the dense layered graph."""
    layers = [_augment(w, head_fusion, residual_weight) for w in maps]
    batch, t, _ = layers[0].shape
    n_layers = len(layers)
    out = np.zeros((batch, t, t))
    for b in range(batch):
        capacity = np.zeros(((n_layers + 1) * t, (n_layers + 1) * t))
        for layer, a in enumerate(layers, start=1):
            for i in range(t):
                for j in range(t):
                    capacity[layer * t + i, (layer - 1) * t + j] = a[b, i, j]
        for i in range(t):
            for j in range(t):
                out[b, i, j] = reference_max_flow(capacity, n_layers * t + i, j)
    return out


def reference_gradient_rollout(weights, gradients):
    """R = I; R ← R + mean_h((∇A ⊙ A)⁺) · R per layer, with explicit sums."""
    a_list = [np.asarray(w, np.float64) for w in weights]
    g_list = [np.asarray(g, np.float64) for g in gradients]
    batch, t = a_list[0].shape[0], a_list[0].shape[-1]
    relevance = np.stack([np.eye(t)] * batch)
    for a, g in zip(a_list, g_list, strict=True):
        if a.ndim == 3:
            a, g = a[:, None], g[:, None]
        cam = np.maximum(a * g, 0.0).mean(1)
        nxt = relevance.copy()
        for b in range(batch):
            for i in range(t):
                for j in range(t):
                    nxt[b, i, j] += sum(cam[b, i, k] * relevance[b, k, j] for k in range(t))
        relevance = nxt
    return relevance


def reference_classifier(x, mha, dense_kernel, dense_bias, gates=None):
    """``Dense(GlobalAveragePooling1D(tanh(MHA(x, x))))`` in float64.

    ``mha`` maps Keras' MultiHeadAttention weight names ("query/kernel" (D, H,
    Dk), ..., "attention_output/kernel" (H, Dv, D)) to arrays; ``gates`` (H,)
    multiplies each head's weights (head masking). Returns ``(logits (B, C),
    weights (B, H, T, T), cache)`` with what ``reference_classifier_gradient``
    needs.
    """
    w = {k: np.asarray(v, np.float64) for k, v in mha.items()}
    x = np.asarray(x, np.float64)

    def project(name):
        return np.einsum("btd,dhk->bthk", x, w[f"{name}/kernel"]) + w[f"{name}/bias"]

    q, k, v = project("query"), project("key"), project("value")  # (B, T, H, Dk)
    logits = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(q.shape[-1])
    logits -= logits.max(-1, keepdims=True)
    a = np.exp(logits)
    a /= a.sum(-1, keepdims=True)  # (B, H, T, T)
    used = a if gates is None else a * np.asarray(gates, np.float64)[None, :, None, None]
    context = np.einsum("bhij,bjhd->bihd", used, v)  # (B, T, H, Dv)
    o = np.einsum("bihd,hde->bie", context, w["attention_output/kernel"])
    o = o + w["attention_output/bias"]
    h = np.tanh(o)  # (B, T, D)
    pooled = h.mean(1)
    out = pooled @ np.asarray(dense_kernel, np.float64) + np.asarray(dense_bias, np.float64)
    return out, a, {"v": v, "h": h, "w": w}


def reference_classifier_gradient(x, mha, dense_kernel, dense_bias, target):
    """∂ Σ_b logits[b, target_b] / ∂A for ``reference_classifier``, by the chain rule.

    ∂y/∂h[b,i,e] = W_d[e, c_b] / T; ∂y/∂o = ∂y/∂h · (1 − h²);
    ∂y/∂context[b,i,h,d] = Σ_e ∂y/∂o[b,i,e] W_o[h,d,e];
    ∂y/∂A[b,h,i,j] = Σ_d ∂y/∂context[b,i,h,d] · V[b,j,h,d].
    Returns ``(weights (B, H, T, T), gradients (B, H, T, T))``.
    """
    _, a, cache = reference_classifier(x, mha, dense_kernel, dense_bias)
    kernel = np.asarray(dense_kernel, np.float64)
    h, v, w = cache["h"], cache["v"], cache["w"]
    t = h.shape[1]
    target = np.broadcast_to(np.asarray(target), (h.shape[0],))
    d_h = kernel[:, target].T[:, None, :] / t  # (B, 1, D)
    d_o = d_h * (1.0 - h**2)  # (B, T, D)
    d_context = np.einsum("bie,hde->bihd", d_o, w["attention_output/kernel"])
    return a, np.einsum("bihd,bjhd->bhij", d_context, v)
