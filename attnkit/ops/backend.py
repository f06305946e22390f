"""Every backend-specific line of the attention core, in this one leaf module.

The algorithms (``chunked``, ``fused``, ``naive``) are written once with
``keras.ops``; five things need a backend's own API, each chosen from a
measurement recorded in docs/BENCHMARKS.md:

1. ``custom_vjp(forward, backward)``: attaches a hand-written backward to a
   forward with ``jax.custom_vjp``, ``tf.custom_gradient`` or a
   ``torch.autograd.Function``. ``chunked`` uses it for its recomputing
   FlashAttention-2 backward; without it, autodiff through the blocked loops
   stores every block's probabilities (O(N²) memory).
2. ``fused_attention(...)``: the backend's own attention kernel, with what
   each backend needs around it: PyTorch's ``scaled_dot_product_attention``
   with ``enable_gqa`` (``keras.ops.dot_product_attention`` would repeat the
   key/value heads), repeated key/value heads for TensorFlow's kernel, zero
   padding of unequal head sizes for JAX's.
3. ``flush_small(p)`` and ``exp_flushed(x)``: probabilities kept out of
   the subnormal range on torch, whose CPU kernels take a microcode assist
   per subnormal (XLA and TensorFlow run with flush-to-zero already).
4. Two primitives of torch's row-block loops: ``matmul_transposed`` (q kᵀ
   without a copy of k) and ``add_into`` (dk and dv accumulated in place).
5. Causal attention on TensorFlow in query blocks (``tf_causal_blocks``): it
   needs ``tf.map_fn`` over heads and ``transpose_b`` matmuls, so that each
   block's key/value prefix is a free slice rather than a copy.

It also holds ``compiled(fn, variables)``, the one place outside the core that
compiles an inference function for the running backend (the decoding steps of
``attnkit.models.language_model``).

This module imports only ``keras`` and the core's two primitive modules
(``masks``, ``softmax``), never an algorithm: ``tests/test_imports.py`` checks
it, and that no other module of attnkit but ``dispatch`` (the policy tables)
asks which backend runs.
"""

from __future__ import annotations

import functools
import math

import keras
from keras import ops

from attnkit.ops.masks import large_negative, position_mask
from attnkit.ops.softmax import softmax_dtype


def name():
    """The running Keras backend: ``"jax"``, ``"tensorflow"``, ``"torch"``, ..."""
    return keras.backend.backend()


def gradient_recorded(*tensors):
    """Whether a gradient of these tensors may be taken: a tf.GradientTape is
    recording, or a torch tensor requires grad. (JAX cannot tell jit from grad
    here; its "auto" never picks a materialising kernel at large sizes.)"""
    backend = name()
    if backend == "tensorflow":
        from tensorflow.python.eager import record  # no public API asks

        return bool(record.could_possibly_record())
    if backend == "torch":
        import torch

        return torch.is_grad_enabled() and any(
            torch.is_tensor(x) and x.requires_grad for x in tensors
        )
    return False


# Custom gradients ----------------------------------------------------------------


def compiled(fn, variables=()):
    """``fn`` compiled for inference on the running backend.

    JAX: ``jax.jit`` of ``fn`` with ``variables`` (Keras variables it reads)
    passed in as values, so the compiled function sees their current values on
    every call; TensorFlow: ``tf.function``; torch: eager under
    ``torch.no_grad`` (NumPy arguments converted). Arguments keep their
    shapes: each new shape compiles once.
    """
    backend = name()
    if backend == "jax":
        import jax

        variables = list(variables)

        @jax.jit
        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return fn(*args)

        return lambda *args: pure([v.value for v in variables], *args)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=False)
    if backend == "torch":
        import numpy as np
        import torch

        def run(*args):
            with torch.no_grad():
                args = [ops.convert_to_tensor(a) if isinstance(a, np.ndarray) else a for a in args]
                return fn(*args)

        return run
    return fn


def custom_vjp(forward, backward):
    """``f(inputs, aux, cfg)`` with a hand-written backward.

    ``forward(inputs, aux, cfg) -> (out, residual)`` and ``backward(inputs,
    aux, cfg, out, residual, d_out) -> grads``, one gradient per entry of
    ``inputs``. ``inputs`` is a tuple of tensors, all differentiated (the
    query, key and value, and whatever else the caller's gradient covers:
    sink logits, a score_mod's parameters, passed explicitly because
    ``jax.custom_vjp`` cannot differentiate a closed-over traced array);
    ``aux`` is a tuple of tensors or None that are not differentiated (masks);
    ``cfg`` is static and hashable. The returned function gives ``out``; on a
    backend without a custom-gradient mechanism here it is the forward,
    differentiated by autodiff.
    """

    def apply(inputs, aux, cfg):
        inputs, aux = tuple(inputs), tuple(aux)
        backend = name()
        if backend == "jax":
            return _jax_vjp(forward, backward)(inputs, aux, cfg)
        if backend == "tensorflow":
            return _tf_vjp(forward, backward, inputs, aux, cfg)
        if backend == "torch":
            return _torch_vjp(forward, backward, inputs, aux, cfg)
        return forward(inputs, aux, cfg)[0]

    if name() == "torch":
        import torch

        # Under torch.compile, Dynamo would trace into the Function's forward
        # and unroll every block loop (minutes to compile already at N=512, a
        # graph that grows with N). The op runs eagerly instead, behind one
        # graph break: its loops are batched block matmuls already, and its
        # memory stays the eager path's O(N).
        return torch.compiler.disable(apply)
    return apply


@functools.cache
def _jax_vjp(forward, backward):
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
    def f(inputs, aux, cfg):
        return forward(inputs, aux, cfg)[0]

    def f_fwd(inputs, aux, cfg):
        out, residual = forward(inputs, aux, cfg)
        return out, (inputs, aux, out, residual)

    def f_bwd(cfg, saved, d_out):
        inputs, aux, out, residual = saved
        grads = backward(inputs, aux, cfg, out, residual, d_out)
        return tuple(grads), None

    f.defvjp(f_fwd, f_bwd)
    return f


def _tf_vjp(forward, backward, inputs, aux, cfg):
    import tensorflow as tf

    @tf.custom_gradient
    def f(*inputs):
        # Run eagerly, tf.custom_gradient lets an enclosing GradientTape
        # record every op of the blocked loops: O(N²) memory kept for a
        # gradient that the custom backward replaces (issue 17: 10.9 GiB at
        # N=8192). The forward runs with recording paused.
        with _tf_no_record():
            out, residual = forward(inputs, aux, cfg)

        def grad(d_out):
            # (Recording stays on: a score_mod's block-wise vjp needs its tape.)
            return list(backward(inputs, aux, cfg, out, residual, d_out))

        return out, grad

    return f(*inputs)


def _tf_no_record():
    from tensorflow.python.eager import record  # no public API pauses every tape

    return record.stop_recording()


@functools.cache
def _torch_function(forward, backward):
    import torch

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, aux, cfg, *inputs):
            out, residual = forward(inputs, aux, cfg)
            ctx.save_for_backward(*inputs, out, residual)
            ctx.aux, ctx.cfg = aux, cfg
            return out

        @staticmethod
        def backward(ctx, d_out):
            *inputs, out, residual = ctx.saved_tensors
            with torch.no_grad():
                grads = backward(tuple(inputs), ctx.aux, ctx.cfg, out, residual, d_out)
            return (None, None, *grads)

    return Function


def _torch_vjp(forward, backward, inputs, aux, cfg):
    import torch

    if not any(torch.is_tensor(x) and x.requires_grad for x in inputs):
        with torch.no_grad():
            return forward(inputs, aux, cfg)[0]
    return _torch_function(forward, backward).apply(aux, cfg, *inputs)


def vjp(fn, *primals):
    """``(fn(*primals), pullback)``: ``pullback(cotangent)`` gives one gradient
    per primal (zeros where ``fn`` does not depend on it). For the chunked
    backward's block-wise derivative of a ``score_mod``; also inside loops."""
    backend = name()
    if backend == "jax":
        import jax

        return jax.vjp(fn, *primals)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(persistent=False) as tape:
            tape.watch(primals)
            out = fn(*primals)

        def tf_pullback(cotangent):
            return tuple(
                tape.gradient(
                    out,
                    primals,
                    output_gradients=cotangent,
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
            )

        return out, tf_pullback
    if backend == "torch":
        import torch

        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(True) for p in primals]
            out = fn(*leaves)

        def torch_pullback(cotangent):
            with torch.enable_grad():
                grads = torch.autograd.grad(out, leaves, cotangent, allow_unused=True)
            return tuple(
                torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads, strict=True)
            )

        return out.detach(), torch_pullback
    raise NotImplementedError(f"vjp is not available on the {backend} backend")


# Subnormal probabilities --------------------------------------------------------

# exp(s - max) of a logit 87 to 104 below its row's maximum is a subnormal
# float32 (ALiBi makes such logits in every row at N in the thousands). On
# torch's CPU kernels a subnormal costs a microcode assist wherever it is
# produced or read: a (8, 256, 4096) x (8, 4096, 64) bmm with 2% subnormal
# entries took 18.1 ms against 3.9 ms (JAX 5.2 against 8.4, TensorFlow 4.7
# against 6.7: both run with flush-to-zero); exp of an ALiBi block of 4M
# logits 20 ms against 0.8 ms with its argument clamped; ALiBi's row-block
# forward at N=4096 1022 ms against 666 with torch.set_flush_denormal (which
# reaches only the calling thread, not the OpenMP pool: a global switch, not
# the library's to flip). So on torch the core sets the probabilities at or
# below e^-80 (``_FLUSH_LOG``; 1.8e-35 in float32: far enough above the smallest
# normal, 1.2e-38, that a probability times a value is normal too) to zero.
# An output moves by less than Tv times that, far below float32's resolution.
# Raising them to a floor instead would have made the exact zeros (masked
# keys) floor-sized, every product with them subnormal: 6 s for that forward.
# NaN stays NaN (torch.threshold replaces x <= threshold, which NaN is not).
_FLUSH_LOG = {"float32": -80.0, "float64": -700.0}


def _torch_full_precision(x):
    return name() == "torch" and keras.backend.standardize_dtype(x.dtype) in _FLUSH_LOG


def _may_overwrite(x, reuse):
    import torch

    return reuse and not (x.requires_grad and torch.is_grad_enabled())


def flush_small(p, reuse=False):
    """Probabilities ``p`` with entries at or below e^-80 (float32; e^-700 in
    float64) set to zero, on torch (one pass; NaN stays NaN); on other
    backends, and in half precision (not a torch fast path on a CPU; the
    threshold would not be negligible there), ``p`` unchanged. ``reuse=True``
    lets torch overwrite ``p`` when no gradient is recorded through it (the
    caller holds no other reference)."""
    if not _torch_full_precision(p):
        return p
    import torch

    threshold = math.exp(_FLUSH_LOG[keras.backend.standardize_dtype(p.dtype)])
    if _may_overwrite(p, reuse):
        return torch.threshold_(p, threshold, 0.0)
    return torch.threshold(p, threshold, 0.0)


def exp_flushed(x, reuse=False):
    """``flush_small(exp(x))``, on torch computed as the exp of ``x`` clamped
    at -81 (the exp of a subnormal result is 25x slower); ``ops.exp(x)``
    elsewhere. ``reuse`` as in :func:`flush_small`."""
    if not _torch_full_precision(x):
        return ops.exp(x)
    import torch

    log_threshold = _FLUSH_LOG[keras.backend.standardize_dtype(x.dtype)]
    low = log_threshold - 1.0  # clamped entries land safely below the threshold
    if _may_overwrite(x, reuse):
        return torch.threshold_(x.clamp_(min=low).exp_(), math.exp(log_threshold), 0.0)
    return torch.threshold(torch.exp(torch.clamp(x, min=low)), math.exp(log_threshold), 0.0)


def matmul_transposed(a, b):
    """``a @ bᵀ`` over the last two axes, batched: (..., m, d) x (..., k, d)
    -> (..., m, k). On torch a matmul with a transposed view: 2.8 ms against
    5.7 for ``einsum("bhmd,bhkd->bhmk")`` at (1, 8, 128, 64) x (1, 8, 4096,
    64), whose einsum copies the keys first. Elsewhere the einsum, unchanged
    from the measurements of the block loop (``chunked._rows``)."""
    if name() == "torch":
        return a @ b.transpose(-1, -2)
    return ops.einsum("bhmd,bhkd->bhmk", a, b)


def writes_in_place():
    """Whether the chunked loops may write their results into buffers in
    place: on torch while no gradient is recorded (a custom gradient's
    forward and backward, inference). Elsewhere results are immutable."""
    if name() != "torch":
        return False
    import torch

    return not torch.is_grad_enabled()


def write_into(acc, x, start, axis):
    """``acc`` with its slice ``[start, start + len(x))`` along ``axis`` set to
    ``x``, in place (:func:`writes_in_place` must hold)."""
    acc.narrow(axis, start, x.shape[axis]).copy_(x)
    return acc


def add_into(acc, x, start, axis):
    """``acc`` with ``x`` added to its slice ``[start, start + len(x))`` along
    ``axis``: in place on torch (``acc`` must be the caller's own
    accumulator, recorded by no gradient), ``ops.slice_update`` elsewhere."""
    if name() == "torch":
        acc.narrow(axis, start, x.shape[axis]).add_(x)
        return acc
    starts = [0] * len(acc.shape)
    starts[axis] = start
    return ops.slice_update(acc, starts, ops.slice(acc, starts, ops.shape(x)) + x)


# The backend's attention kernel --------------------------------------------------


def fused_attention(query, key, value, *, mask=None, bias=None, causal=False, scale=1.0):
    """The backend's own kernel over grouped heads.

    ``query`` (B, Tq, Hkv, G, D), ``key`` (B, Tv, Hkv, D), ``value`` (B, Tv,
    Hkv, Dv); ``mask`` bool and ``bias`` additive, each (B|1, H|1, Tq, Tv) or
    None, with no row fully masked (the caller opens such rows and zeroes
    their output); ``causal`` top-left aligned (only given with neither mask
    nor bias); ``scale`` multiplies the scores inside the kernel. Returns
    (B, Tq, Hkv, G, Dv).
    """
    backend = name()
    if backend in ("tensorflow", "jax") and keras.backend.standardize_dtype(query.dtype) in _HALF:
        # keras' TensorFlow kernel multiplies in the input dtype, and half
        # logits overflow (|x| <= 300, D = 8 reaches 720,000 > 65,504); JAX's
        # asks for float32 accumulation, which XLA on CPU refuses for float16
        # under jit ("precision F16_F16_F32 is not supported"). Both run in
        # float32 and round the output once (cost in docs/BENCHMARKS.md).
        # torch's SDPA accumulates half inputs in float32 itself.
        dtype = query.dtype
        query, key, value = (ops.cast(x, "float32") for x in (query, key, value))
        bias = None if bias is None else ops.cast(bias, "float32")
        out = fused_attention(query, key, value, mask=mask, bias=bias, causal=causal, scale=scale)
        return ops.cast(out, dtype)
    batch, tq, kv_heads, groups, d = ops.shape(query)
    dv = value.shape[-1]
    if (
        backend == "tensorflow"
        and causal
        and isinstance(query.shape[1], int)
        and isinstance(key.shape[1], int)
    ):
        # keras' kernel computes the masked half too (docs/BENCHMARKS.md).
        return tf_causal_blocks(query, key, value, scale)
    heads = kv_heads * groups
    query = ops.reshape(query, (batch, tq, heads, d))  # (B, Tq, H, D)
    if backend == "torch":
        out = _torch_sdpa(
            query,
            key,
            value,
            mask=bias if bias is not None else mask,
            is_causal=causal,
            scale=scale,
        )  # (B, Tq, H, Dv)
    else:
        if backend == "tensorflow" and groups > 1:
            # keras' TensorFlow kernel has no grouped-query heads.
            key = ops.repeat(key, groups, axis=2)  # (B, Tv, H, D)
            value = ops.repeat(value, groups, axis=2)
        if backend == "jax" and dv != d:
            # jax.nn.dot_product_attention requires the value head size to equal
            # the key's: pad values with zero features and drop them after.
            if dv < d:
                value = ops.pad(value, [(0, 0), (0, 0), (0, 0), (0, d - dv)])
            else:
                pad = [(0, 0), (0, 0), (0, 0), (0, dv - d)]
                query, key = ops.pad(query, pad), ops.pad(key, pad)
        out = ops.dot_product_attention(
            query, key, value, bias=bias, mask=mask, scale=scale, is_causal=causal
        )
        out = out[..., :dv]  # (B, Tq, H, Dv)
    return ops.reshape(out, (batch, tq, kv_heads, groups, dv))


_HALF = ("float16", "bfloat16")


def _torch_sdpa(query, key, value, mask=None, is_causal=False, scale=1.0):
    """``F.scaled_dot_product_attention`` in the (B, T, H, D) layout,
    grouped-query heads shared without copies. ``mask`` bool or additive
    (B|1, H|1, Tq, Tv)."""
    import torch.nn.functional as F

    q = query.permute(0, 2, 1, 3)  # (B, H, Tq, D)
    k = key.permute(0, 2, 1, 3)  # (B, Hkv, Tv, D)
    v = value.permute(0, 2, 1, 3)
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
    )  # (B, H, Tq, Dv)
    return out.permute(0, 2, 1, 3)


# TensorFlow causal blocks ------------------------------------------------------

# Causal attention through a materialising kernel computes and then discards
# the masked half of the scores. Split into query blocks, block i needs only
# the keys up to its last row: sum_i (i + 1) / n^2 = 0.53 of the work at
# n = 16 blocks. TensorFlow slices copy unless they cut the outermost axis of
# a tensor, so the blocks run per (batch, key/value head) under tf.map_fn,
# where q, k and v are 2-D and every block's rows and key prefix are views;
# the rows of the G query heads sharing a key/value head are interleaved
# (T * G, D), so grouped-query heads share K/V without repeating them. Each
# block's scores get one additive mask (rows, 1, keys), built once and shared
# by every head. Measured on TensorFlow, forward, B=1, H=8, D=64, one process,
# alternating calls (docs/BENCHMARKS.md): causal / non-causal 0.53x at N=4096,
# 0.50x at N=8192 (batched blocks with copied prefixes: 0.60x; 24 or 32
# blocks, or parallel_iterations 1 or 4, no better).
CAUSAL_QUERY_BLOCKS = 16
CAUSAL_MIN_BLOCK_ROWS = 256


def tf_causal_blocks(query, key, value, scale):
    """Top-left causal attention, blocked over queries; lengths must be static.

    ``query`` (B, Tq, Hkv, G, D), ``key`` (B, Tv, Hkv, D), ``value`` (B, Tv, Hkv,
    Dv) -> (B, Tq, Hkv, G, Dv). Row r sees keys 0..r (every key once r >= Tv);
    each block's rows see their whole key prefix, so every block is an exact
    softmax on its own.
    """
    import tensorflow as tf

    _, tq, kv_heads, groups, d = query.shape
    tv, dv = key.shape[1], value.shape[-1]
    batch = tf.shape(query)[0]
    # Logits and softmax in at least float32, as keras' kernel does.
    logits_dtype = softmax_dtype(query.dtype)
    q = tf.transpose(query * tf.cast(scale, query.dtype), (0, 2, 1, 3, 4))  # (B, Hkv, Tq, G, D)
    q = tf.reshape(q, (-1, tq * groups, d))  # (B * Hkv, Tq * G, D)
    k = tf.reshape(tf.transpose(key, (0, 2, 1, 3)), (-1, tv, d))  # (B * Hkv, Tv, D)
    v = tf.reshape(tf.transpose(value, (0, 2, 1, 3)), (-1, tv, dv))

    size = max(CAUSAL_MIN_BLOCK_ROWS, -(-tq // CAUSAL_QUERY_BLOCKS))
    blocks = []
    for start in range(0, tq, size):
        stop = min(start + size, tq)
        visible = min(stop, tv)  # keys 0 .. visible - 1 seen by some row
        seen = position_mask(
            tf.range(start, stop)[:, None, None],
            tf.range(visible)[None, None],
            causal="top_left",
            window=None,
        )  # (rows, 1, keys)
        penalty = tf.where(seen, 0.0, large_negative(logits_dtype))
        blocks.append((start, stop, visible, tf.cast(penalty, logits_dtype)))  # (rows, 1, keys)

    def one_head(qkv):
        q_h, k_h, v_h = qkv  # (Tq * G, D), (Tv, D), (Tv, Dv)
        outs = []
        for start, stop, visible, penalty in blocks:
            rows = stop - start
            scores = tf.matmul(q_h[start * groups : stop * groups], k_h[:visible], transpose_b=True)
            scores = tf.reshape(tf.cast(scores, logits_dtype), (rows, groups, visible)) + penalty
            probs = tf.cast(tf.nn.softmax(scores, axis=-1), v_h.dtype)
            outs.append(tf.matmul(tf.reshape(probs, (rows * groups, visible)), v_h[:visible]))
        return outs[0] if len(outs) == 1 else tf.concat(outs, axis=0)  # (Tq * G, Dv)

    out = tf.map_fn(one_head, (q, k, v), fn_output_signature=value.dtype, parallel_iterations=2)
    out = tf.reshape(out, (batch, kv_heads, tq, groups, dv))
    return tf.transpose(out, (0, 2, 1, 3, 4))
