"""Training step of a transformer block: attnkit vs keras MultiHeadAttention.

Block: x -> MultiHeadAttention(x, x) (H=8, key_dim=64, causal) -> residual ->
LayerNorm -> Dense(2048, gelu) -> Dense(512) -> residual -> LayerNorm -> mean
squared error against a random target. B=1, N=2048, d_model=512, float32, Adam.
Each (backend, layer) runs in its own process; median ms of ``train_on_batch``
over 5 steps (``--steps``) after 2 warm-up steps (jit_compile on JAX and TensorFlow as Keras
chooses by default), plus peak RSS.

Usage: .venv/bin/python benchmarks/train_step.py [--n 2048] [--backends jax torch tensorflow]
       [--steps 5] [--rounds 1]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, statistics, sys, time
import keras, numpy as np
layer_name, n, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if layer_name == "attnkit":
    from attnkit.layers import MultiHeadAttention as MHA
else:
    MHA = keras.layers.MultiHeadAttention
keras.utils.set_random_seed(0)
x_in = keras.Input((n, 512))
h = MHA(num_heads=8, key_dim=64)(x_in, x_in, use_causal_mask=True)
h = keras.layers.LayerNormalization()(x_in + h)
f = keras.layers.Dense(512)(keras.layers.Dense(2048, activation="gelu")(h))
out = keras.layers.LayerNormalization()(h + f)
model = keras.Model(x_in, out)
model.compile(keras.optimizers.Adam(1e-4), "mse")
rng = np.random.default_rng(0)
x = rng.standard_normal((1, n, 512), dtype=np.float32)
y = rng.standard_normal((1, n, 512), dtype=np.float32)
for _ in range(2):
    model.train_on_batch(x, y)
times = []
for _ in range(steps):
    t0 = time.perf_counter(); model.train_on_batch(x, y); times.append(time.perf_counter() - t0)
print(json.dumps({"median_ms": 1e3 * statistics.median(times),
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--backends", nargs="+", default=["jax", "torch", "tensorflow"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default: 5)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternating process pairs; median of their medians"
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    print(f"| backend | keras MHA ms (GiB) | attnkit MHA ms (GiB) | ratio |  (N={args.n})")
    print("|---|---|---|---|")
    for backend in args.backends:
        runs = {"keras": [], "attnkit": []}
        for _ in range(args.rounds):  # alternating processes: drift hits both alike
            for layer in ("keras", "attnkit"):
                env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, layer, str(args.n), str(args.steps)],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                if lines:
                    runs[layer].append(json.loads(lines[-1]))
                else:
                    print(proc.stderr[-2000:], file=sys.stderr)
        got = {}
        for layer, results in runs.items():
            got[layer] = None
            if len(results) == args.rounds:
                got[layer] = {
                    "median_ms": statistics.median(r["median_ms"] for r in results),
                    "peak_rss_gib": max(r["peak_rss_gib"] for r in results),
                    "rounds_ms": [r["median_ms"] for r in results],
                }
        rows.append({"backend": backend, **got})
        k, a = got["keras"], got["attnkit"]
        cell = lambda r: "fails" if r is None else f"{r['median_ms']:.0f} ({r['peak_rss_gib']:.2f})"  # noqa: E731
        ratio = f"{a['median_ms'] / k['median_ms']:.2f}" if k and a else "-"
        print(f"| {backend} | {cell(k)} | {cell(a)} | {ratio} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
