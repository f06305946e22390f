"""O(N) memory of the chunked path's forward + backward in every execution mode.

Each run is a subprocess (peak RSS is per process): after a warm-up at a small
size in every mode, forward + backward at N=2048 (B=1, H=8, D=32) must grow
the peak by less than ``LIMIT_MIB``, while one (B, H, N, N) float32 score
matrix alone is 128 MiB. The same script then runs the naive path, whose
growth must exceed the limit: the measurement can tell the two apart.
Issue 17, item 3; a test of memory, never of time. The chunked runs cover the
plain call, score/mask mods and attention dropout (whose keep-mask the
backward regenerates block by block).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

LIMIT_MIB = 96
N = 2048

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import keras
    from keras import ops
    from attnkit.ops import attention

    backend = keras.backend.backend()
    n = int(sys.argv[1])

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def alibi(score, b, h, q, kv, slopes):
        return score - ops.reshape(slopes, (1, -1, 1, 1)) * ops.cast(ops.abs(q - kv), "float32")

    def documents(b, h, q, kv):
        return q // 512 == kv // 512

    def loss_fn(kwargs):
        def loss(q, k, v, slopes):
            extra = {}
            if kwargs.get("mods"):
                extra = dict(score_mod=alibi, score_mod_params=(slopes,), mask_mod=documents)
            if kwargs.get("dropout"):
                extra.update(dropout=0.1, training=True, seed=3)
            impl = kwargs["impl"]
            out = attention(q, k, v, causal=True, implementation=impl, **extra)
            return ops.sum(out)
        return loss

    def modes(kwargs):
        loss = loss_fn(kwargs)
        if backend == "jax":
            import jax
            grad = jax.grad(loss, argnums=(0, 1, 2, 3))
            return {"jax eager": grad, "jax jit": jax.jit(grad)}
        if backend == "tensorflow":
            import tensorflow as tf
            def grad(*xs):
                with tf.GradientTape() as tape:
                    tape.watch(xs)
                    value = loss(*xs)
                return tape.gradient(value, xs)
            return {"tf eager": grad, "tf.function": tf.function(grad)}
        import torch
        def grad(*xs):
            xs = [x.detach().requires_grad_(True) for x in xs]
            loss(*xs).backward()
            return [x.grad for x in xs]
        return {"torch eager": grad}

    def inputs(length):
        rng = np.random.default_rng(0)
        q = rng.normal(size=(1, length, 8, 32)).astype("float32")
        slopes = (2.0 ** -np.arange(1, 9)).astype("float32")
        return [ops.convert_to_tensor(x) for x in (q, q, q, slopes)]

    result = {}
    runs = [dict(impl="chunked"), dict(impl="chunked", mods=True)]
    runs.append(dict(impl="chunked", dropout=True))
    for kwargs in runs + [dict(impl="naive")]:
        for name, f in modes(kwargs).items():
            [ops.convert_to_numpy(g) for g in f(*inputs(256))]  # compile, warm up
    base = peak_mib()
    for kwargs in runs:
        for name, f in modes(kwargs).items():
            [ops.convert_to_numpy(g) for g in f(*inputs(n))]
            tag = " +mods" if kwargs.get("mods") else " +dropout" if kwargs.get("dropout") else ""
            result[name + tag] = peak_mib() - base
    chunked_peak = peak_mib()
    f = next(iter(modes(dict(impl="naive")).values()))
    [ops.convert_to_numpy(g) for g in f(*inputs(n))]
    result["naive"] = peak_mib() - chunked_peak
    print(json.dumps(result))
    """
)


@pytest.mark.slow  # 3.5 min on torch on the loaded 2-core machine: too long for the default suite
def test_chunked_forward_backward_is_linear_in_memory_in_every_mode():
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(N)], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = json.loads(proc.stdout.strip().splitlines()[-1])
    naive = growth.pop("naive")
    assert naive > LIMIT_MIB, f"the measurement cannot tell O(N²) from O(N): {growth}, {naive}"
    for mode, mib in growth.items():
        assert mib < LIMIT_MIB, (mode, mib, growth)


@pytest.mark.slow
def test_at_n_8192_too():
    """The same at N=8192 (2 GiB per score matrix), for ``make test-slow``."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "8192"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = json.loads(proc.stdout.strip().splitlines()[-1])
    growth.pop("naive")
    for mode, mib in growth.items():
        assert mib < 4 * LIMIT_MIB, (mode, mib, growth)
