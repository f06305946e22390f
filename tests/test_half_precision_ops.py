"""Half precision in the attention core (issue 16, item 1).

Inputs that float16 (or bfloat16) represents exactly must give finite outputs
and gradients on every implementation, although their logits exceed the half
range: |x| <= 300 with D = 8 gives |q·k| up to 720,000 (float16 tops out at
65,504). The output is a convex combination of the values, so it is
representable too; the core computes the logits in float32.
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from attnkit.ops import attention
from attnkit.testing.reference import reference_attention

B, T, H, HKV, D = 2, 24, 4, 2, 8
IMPLS = ("naive", "chunked", "fused")  # "auto" picks one of them


def _inputs(dtype):
    rng = np.random.default_rng(0)
    # Integers in [-300, 300]: exact in float16; bfloat16 rounds them once,
    # here, before the float64 reference sees them.
    shapes = (B, T, H, D), (B, T, HKV, D), (B, T, HKV, D)
    arrays = [rng.integers(-300, 301, size=s).astype("float32") for s in shapes]
    tensors = [keras.ops.cast(a, dtype) for a in arrays]
    return tensors, [to_numpy(keras.ops.cast(t, "float32")) for t in tensors]


def _grads(fn, tensors):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(jax.grad(fn, argnums=(0, 1, 2)))(*tensors)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss = fn(*tensors)
        return tape.gradient(loss, tensors)
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    fn(*leaves).backward()
    return [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", ("float16", "bfloat16"))
@pytest.mark.parametrize("impl", IMPLS)
def test_large_representable_inputs_give_finite_outputs_and_gradients(dtype, impl):
    tensors, arrays = _inputs(dtype)
    kwargs = dict(causal=True, implementation=impl)
    if impl == "chunked":
        kwargs["block_size"] = (8, 8)
    out = attention(*tensors, **kwargs)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    got = to_numpy(keras.ops.cast(out, "float32"))
    assert np.all(np.isfinite(got)), impl
    # Nearly one-hot weights: float32 logits of order 1e5 carry absolute errors
    # of order 1e-2, so compare against float64 within the values' half ulp
    # scale rather than elementwise float32 rounding.
    want, _ = reference_attention(*arrays, causal=True)
    assert np.max(np.abs(got - want)) <= 300 * 2**-7, impl

    def loss(q, k, v):
        out = attention(q, k, v, **kwargs)
        return keras.ops.mean(keras.ops.cast(out, "float32")) * 1e-2

    for name, grad in zip("qkv", _grads(loss, tensors), strict=True):
        grad = to_numpy(keras.ops.cast(grad, "float32"))
        assert np.all(np.isfinite(grad)), (impl, name)


@pytest.mark.parametrize("policy", ("mixed_float16", "mixed_bfloat16"))
def test_under_mixed_policy_the_decoding_step_stays_finite(policy):
    keras.config.set_dtype_policy(policy)
    dtype = keras.config.dtype_policy().compute_dtype
    tensors, _ = _inputs(dtype)
    q = tensors[0][:, -1:]  # one query at the end of the cache
    out = attention(q, tensors[1], tensors[2], causal=True)
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(out, "float32"))))
