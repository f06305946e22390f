"""In-process A/B: the cost of computing half-precision logits in float32.

Issue 16 made every path of ``attnkit.ops.attention`` form its logits in
float32 when the inputs are float16 or bfloat16 (before, naive and chunked
multiplied in the half dtype and the fused kernels on TensorFlow and JAX ran
in it, so representable inputs could overflow). This times the new code
against a copy of the code before that change, in the same process,
alternating call by call, so that drift on a shared machine hits both alike;
the ratios are the numbers to read.

The old code is a git revision of this repository, imported under another
package name (``attnkit_before``): ``--before`` names the revision (default
6ba5ae8, the last commit before the change).

Forward, B=1, H=8, D=64, self-attention, standard normal inputs (representable
in both dtypes, so the old code gives finite outputs too), ``implementation``
``auto`` and ``chunked``; JAX calls ``jax.jit``-compiled, TensorFlow ones in
``tf.function``.

Usage: KERAS_BACKEND=<b> python benchmarks/half_precision.py [--n 4096] [--rounds 5]
"""

import argparse
import importlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
from keras import ops

from attnkit.ops import attention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_before(revision):
    """The package at ``revision``, importable as ``attnkit_before``."""
    root = tempfile.mkdtemp(prefix="attnkit_before_")
    files = subprocess.run(
        ["git", "-C", ROOT, "ls-tree", "-r", "--name-only", revision, "attnkit"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    for path in files:
        if not path.endswith(".py"):
            continue
        text = subprocess.run(
            ["git", "-C", ROOT, "show", f"{revision}:{path}"],
            check=True, capture_output=True, text=True,
        ).stdout
        text = re.sub(r"\battnkit\b", "attnkit_before", text)
        target = os.path.join(root, "attnkit_before" + path[len("attnkit"):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            f.write(text)
    sys.path.insert(0, root)
    return importlib.import_module("attnkit_before.ops")


def compiled(backend, fs):
    if backend == "jax":
        import jax

        return {name: jax.jit(f) for name, f in fs.items()}
    if backend == "tensorflow":
        import tensorflow as tf

        return {name: tf.function(f) for name, f in fs.items()}
    return fs


def run(n, dtype, rounds, before):
    backend = keras.backend.backend()
    q = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(1, n, 8, 64)), dtype)
    fs = {}
    for impl in ("auto", "chunked"):
        fs[f"before {impl}"] = lambda x, impl=impl: before.attention(x, x, x, implementation=impl)
        fs[f"after {impl}"] = lambda x, impl=impl: attention(x, x, x, implementation=impl)
    fs = compiled(backend, fs)

    def call(f):
        if backend == "torch":
            import torch

            with torch.no_grad():
                return ops.convert_to_numpy(f(q))
        return ops.convert_to_numpy(f(q))

    for name, f in fs.items():
        out = call(f)  # compile / warm up
        assert np.isfinite(out.astype("float32")).all(), name
    times = {name: [] for name in fs}
    for _ in range(rounds):
        for name, f in fs.items():
            start = time.perf_counter()
            call(f)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[4096])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", nargs="+", default=["float16", "bfloat16"])
    parser.add_argument("--before", default="6ba5ae8")
    args = parser.parse_args()
    before = import_before(args.before)
    backend = keras.backend.backend()
    print("| backend | N | dtype | implementation | before ms | after ms | after / before |")
    print("|---|---|---|---|---|---|---|")
    for n in args.n:
        for dtype in args.dtype:
            ms = run(n, dtype, args.rounds, before)
            for impl in ("auto", "chunked"):
                b, a = ms[f"before {impl}"], ms[f"after {impl}"]
                print(
                    f"| {backend} | {n} | {dtype} | {impl} | {b:.0f} | {a:.0f} | {a / b:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
