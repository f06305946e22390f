"""In-process A/B timing: attnkit's default against each backend's peers.

``attnkit bench`` runs every configuration in its own process, which is what
peak-memory numbers need, but on a shared machine the load drifts between
processes. Here all contenders run in one process, alternating call by call
(round r times every contender once), so drift hits them alike; the ratios
are the numbers to read. Forward, float32, B=1, H=8, D=64, self-attention;
JAX functions ``jax.jit``-compiled, TensorFlow ones in ``tf.function``.

Contenders per backend: ``auto`` (``attnkit.ops.attention`` default),
``keras-dpa`` (``keras.ops.dot_product_attention``), ``native`` (torch
``F.scaled_dot_product_attention``, ``jax.nn.dot_product_attention``; none
on TensorFlow beyond keras' kernel) and ``naive`` (softmax(QKᵀ/√d)V written
with ``keras.ops``). Causal rows use each one's causal switch.

Usage: KERAS_BACKEND=<b> python benchmarks/ab.py [--n 1024 4096 8192] [--rounds 7]
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np
from keras import ops

from attnkit.ops import attention


def naive(q, k, v, causal):
    s = ops.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if causal:
        n = q.shape[1]
        s = ops.where(ops.tril(ops.ones((n, n), "bool")), s, -1e9)
    return ops.einsum("bhqk,bkhd->bqhd", ops.softmax(s, axis=-1), v)


def contenders(backend, causal):
    fs = {
        "auto": lambda q: attention(q, q, q, causal=causal),
        "keras-dpa": lambda q: ops.dot_product_attention(q, q, q, is_causal=causal),
        "naive": lambda q: naive(q, q, q, causal),
    }
    if backend == "torch":
        import torch

        def sdpa(q):
            x = q.transpose(1, 2)
            return torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=causal)

        fs["native"] = sdpa
    elif backend == "jax":
        import jax

        fs["native"] = lambda q: jax.nn.dot_product_attention(q, q, q, is_causal=causal)
    if backend == "jax":
        import jax

        fs = {name: jax.jit(f) for name, f in fs.items()}
    elif backend == "tensorflow":
        import tensorflow as tf

        fs = {name: tf.function(f) for name, f in fs.items()}
    return fs


def run(n, causal, rounds):
    backend = keras.backend.backend()
    q = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(1, n, 8, 64)), "float32")
    fs = contenders(backend, causal)
    times = {name: [] for name in fs}

    def call(f):
        if backend == "torch":
            import torch

            with torch.no_grad():
                return ops.convert_to_numpy(f(q))
        return ops.convert_to_numpy(f(q))

    for f in fs.values():
        call(f)  # compile / warm up
    for _ in range(rounds):
        for name, f in fs.items():
            start = time.perf_counter()
            call(f)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--causal", choices=("no", "yes", "both"), default="both")
    parser.add_argument("--json")
    args = parser.parse_args()
    backend = keras.backend.backend()
    causals = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]
    rows = []
    print("| backend | N | causal | auto ms | best peer | peer ms | auto / peer | all (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.n:
        for causal in causals:
            ms = run(n, causal, args.rounds)
            peers = {k: v for k, v in ms.items() if k != "auto"}
            best = min(peers, key=peers.get)
            rows.append({"backend": backend, "n": n, "causal": causal, "ms": ms})
            all_ms = ", ".join(f"{k} {v:.0f}" for k, v in ms.items())
            print(
                f"| {backend} | {n} | {'yes' if causal else 'no'} | {ms['auto']:.0f} | {best} | "
                f"{peers[best]:.0f} | {ms['auto'] / peers[best]:.2f} | {all_ms} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
