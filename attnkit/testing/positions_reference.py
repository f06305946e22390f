"""Float64 NumPy references of ``attnkit.ops.positions``, written from the papers.

Each function loops over pairs and positions in the papers' notation rather
than vectorising as the ops do, so the two are independent; the gradients
are exact (rotary is linear in ``x``: its gradient is the transposed
rotation; the norms' gradients are written out).
"""

from __future__ import annotations

import math

import numpy as np


def reference_frequencies(
    rotary_dim,
    *,
    max_wavelength=10000.0,
    scaling=None,
    scaling_factor=1.0,
    original_max_position=None,
    beta_fast=32.0,
    beta_slow=1.0,
    yarn_truncate=True,
    length=None,
):
    """θ_k for k = 0..R/2-1 (float64); ``length`` is dynamic NTK's L."""
    r, base, s = rotary_dim, float(max_wavelength), float(scaling_factor)
    if scaling == "ntk":
        base *= s ** (r / (r - 2))
    if scaling == "dynamic" and length > original_max_position:
        base *= (s * length / original_max_position - (s - 1)) ** (r / (r - 2))
    theta = np.array([base ** (-2.0 * k / r) for k in range(r // 2)])
    if scaling in (None, "linear"):
        return theta / s
    if scaling == "yarn":
        # Paper §3.2: r_k = L0 / λ_k, λ_k = 2π / θ_k; γ = 0 for r < α, 1 for r > β.
        def dim_of(rotations):  # the k with L0 θ_k / (2π) = rotations
            return (
                r
                * math.log(original_max_position / (rotations * 2 * math.pi))
                / (2 * math.log(base))
            )

        low, high = dim_of(beta_fast), dim_of(beta_slow)
        if yarn_truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, r - 1)
        out = []
        for k in range(r // 2):
            interpolate = min(max((k - low) / max(high - low, 1e-3), 0.0), 1.0)
            out.append(theta[k] * (1 - interpolate) + theta[k] / s * interpolate)
        return np.array(out)
    return theta


def _rotation_pairs(depth, rotary_dim, interleaved):
    """[(index of a, index of b)] of the k-th rotated pair."""
    half = rotary_dim // 2
    if interleaved:
        return [(2 * k, 2 * k + 1) for k in range(half)]
    return [(k, k + half) for k in range(half)]


def reference_rotary(x, positions, theta, *, interleaved=False, magnitude=1.0, cotangent=None):
    """RoPE of ``x`` (B, T, ..., D) at ``positions`` (B|1, T) with frequencies ``theta``.

    Returns the rotated x (float64), or with ``cotangent`` the gradient of
    ``sum(out * cotangent)`` w.r.t. x (the transposed rotation of the cotangent).
    """
    x = np.asarray(x, np.float64)
    positions = np.broadcast_to(np.asarray(positions, np.float64), x.shape[:2])
    src = x if cotangent is None else np.asarray(cotangent, np.float64)
    out = src.copy()
    sign = 1.0 if cotangent is None else -1.0  # R(φ)ᵀ = R(-φ)
    for k, (ia, ib) in enumerate(_rotation_pairs(x.shape[-1], 2 * len(theta), interleaved)):
        for b in range(x.shape[0]):
            for t in range(x.shape[1]):
                phi = sign * positions[b, t] * theta[k]
                a, c = src[b, t, ..., ia], src[b, t, ..., ib]
                out[b, t, ..., ia] = magnitude * (a * math.cos(phi) - c * math.sin(phi))
                out[b, t, ..., ib] = magnitude * (c * math.cos(phi) + a * math.sin(phi))
    return out


def reference_sinusoidal(positions, dim, max_wavelength=10000.0):
    """PE(p, 2i) = sin(p / base^(2i/D)), PE(p, 2i+1) = cos(...), (..., T, D)."""
    positions = np.asarray(positions, np.float64)
    out = np.zeros(positions.shape + (dim,))
    for j in range(dim):
        angle = positions / max_wavelength ** (2 * (j // 2) / dim)
        out[..., j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return out


def reference_qk_norm(x, scale=None, kind="rms", epsilon=1e-6, cotangent=None):
    """RMS or L2 norm over the last axis times ``scale``; with ``cotangent`` the
    gradient of ``sum(out * cotangent)`` w.r.t. x."""
    x = np.asarray(x, np.float64)
    g = np.ones(x.shape[-1]) if scale is None else np.asarray(scale, np.float64)
    if kind == "rms":
        denom = np.sqrt(np.mean(x**2, -1, keepdims=True) + epsilon)
        d_denom_dx = x / (x.shape[-1] * denom)  # ∂denom/∂x
    else:
        sq = np.sum(x**2, -1, keepdims=True)
        denom = np.sqrt(np.maximum(sq, epsilon))
        d_denom_dx = np.where(sq > epsilon, x / denom, 0.0)
    if cotangent is None:
        return x / denom * g
    gc = np.asarray(cotangent, np.float64) * g  # ∂L/∂(x / denom)
    return gc / denom - np.sum(gc * x, -1, keepdims=True) / denom**2 * d_denom_dx
