"""Peak memory of attention's forward + backward in every execution mode.

Issue 17, "O(N) memory in every execution mode": the gradient of
``sum(attention(q, k, v, ...))`` with respect to q, k and v, B=1, H=8, D=64,
float32, self-attention, with ALiBi + a document mask of 8 equal documents (a
``mask_mod`` from ``attnkit.ops.mods.document_mask`` summarised by
``attnkit.ops.block_mask``) + a soft cap of 50 (``attnkit.ops.mods``), the
default ``implementation="auto"`` (which takes the chunked path for these
mods), on every backend and mode:

    JAX eager (``jax.grad``) and ``jax.jit(jax.grad(...))``,
    TensorFlow eager (``tf.GradientTape``) and ``tf.function``,
    torch eager (``.backward()``) and ``torch.compile`` (the loss compiled,
    ``dynamic=False``: a second length would be traced with a symbolic one,
    which the chunked path refuses; the backward runs through the compiled
    graph). The chunked op runs eagerly behind one graph break
    (``torch.compiler.disable`` in ``ops.backend.custom_vjp``), with its own
    O(N)-memory backward.

Plus plain ``attention(q, k, v)`` (no mods, ``"auto"``) on TensorFlow eager at
N/2 (16384 by default: the issue's "over 23 GiB" case).

Every case runs in its own subprocess, one after the other (peak RSS is per
process): it imports, builds the inputs and the block mask, warms the mode up
at ``--warm-n`` (compiling where the mode compiles), records
``ru_maxrss`` as the baseline, then runs the full size once. The table gives
the process' peak RSS (the number the 4 GiB target is about), the growth over
the warm-up baseline, the wall time of the measured call and the path taken.
Timings are for orientation only (the machine is shared).

Usage: python benchmarks/memory.py [--n 32768] [--warm-n 1024]
           [--cases jax-eager,jax-jit,tf-eager,tf-function,torch-eager,torch-compile,tf-eager-plain]
           [--json out.json] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

LIMIT_GIB = 4.0

# name: (backend, mode, workload)
CASES = {
    "jax-eager": ("jax", "eager", "mods"),
    "jax-jit": ("jax", "jit", "mods"),
    "tf-eager": ("tensorflow", "eager", "mods"),
    "tf-function": ("tensorflow", "function", "mods"),
    "torch-eager": ("torch", "eager", "mods"),
    "torch-compile": ("torch", "compile", "mods"),
    "tf-eager-plain": ("tensorflow", "eager", "plain"),
}
LABELS = {
    ("jax", "eager"): "jax eager",
    ("jax", "jit"): "jax.jit",
    ("tensorflow", "eager"): "tf eager (GradientTape)",
    ("tensorflow", "function"): "tf.function",
    ("torch", "eager"): "torch eager",
    ("torch", "compile"): "torch.compile",
}
HEADS, DIM, DOCUMENTS, CAP = 8, 64, 8, 50.0


def _peak_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _loss(workload, n):
    """``loss(q, k, v)`` and the keyword arguments it passes to attention."""
    import numpy as np
    from keras import ops

    from attnkit.ops import attention, block_mask, mods

    if workload == "plain":
        return lambda q, k, v: ops.sum(attention(q, k, v)), {}
    ids = np.repeat(np.arange(DOCUMENTS, dtype="int32"), n // DOCUMENTS)[None, :]  # (1, N)
    bm = block_mask(mods.document_mask(ids), 1, 1, n, n)
    score_mod = mods.compose_scores(mods.alibi(HEADS), mods.soft_cap(CAP))

    def loss(q, k, v):
        return ops.sum(attention(q, k, v, score_mod=score_mod, block_mask=bm))

    return loss, {"block_mask": bm, "score_mod": score_mod}


def _gradient(backend, mode, loss):
    """``grad(q, k, v) -> (dq, dk, dv)`` in the given execution mode."""
    if backend == "jax":
        import jax

        grad = jax.grad(loss, argnums=(0, 1, 2))
        return jax.jit(grad) if mode == "jit" else grad
    if backend == "tensorflow":
        import tensorflow as tf

        def tf_grad(q, k, v):
            with tf.GradientTape() as tape:
                tape.watch((q, k, v))
                value = loss(q, k, v)
            return tape.gradient(value, (q, k, v))

        return tf.function(tf_grad) if mode == "function" else tf_grad
    import torch

    step = torch.compile(loss, dynamic=False) if mode == "compile" else loss

    def torch_grad(q, k, v):
        xs = [x.detach().requires_grad_(True) for x in (q, k, v)]
        step(*xs).backward()
        return [x.grad for x in xs]

    return torch_grad


def _inputs(n):
    import numpy as np
    from keras import ops

    rng = np.random.default_rng(0)
    return [
        ops.convert_to_tensor(rng.normal(size=(1, n, HEADS, DIM)).astype("float32"))
        for _ in range(3)
    ]


def _path(workload, n, extra):
    """The implementation ``auto`` picks for the call (outside any gradient)."""
    import importlib

    import numpy as np

    from attnkit.ops import dispatch

    attention_lib = importlib.import_module("attnkit.ops.attention")  # the module, not the function

    q = np.zeros((1, n, HEADS, DIM), "float32")
    problem = attention_lib.prepare(q, q, q, **extra)
    return dispatch.choose(problem, "auto", False, False)


def child(name, n, warm_n):
    """Runs one case in this process and prints one JSON line."""
    import keras

    backend, mode, workload = CASES[name]
    if keras.backend.backend() != backend:
        raise SystemExit(f"case {name} needs KERAS_BACKEND={backend}")
    if workload == "plain":
        n = n // 2
    warm_loss, _ = _loss(workload, warm_n)
    warm = _gradient(backend, mode, warm_loss)
    [keras.ops.convert_to_numpy(g) for g in warm(*_inputs(warm_n))]  # compile, warm up
    loss, extra = _loss(workload, n)
    f = _gradient(backend, mode, loss)
    xs = _inputs(n)
    path = _path(workload, n, extra)
    base = _peak_mib()
    start = time.perf_counter()
    grads = [keras.ops.convert_to_numpy(g) for g in f(*xs)]
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    finite = all(bool((g == g).all()) for g in grads)  # no NaN
    print(
        json.dumps(
            dict(
                case=name,
                n=n,
                peak_mib=peak,
                base_mib=base,
                growth_mib=peak - base,
                seconds=seconds,
                path=path,
                finite=finite,
            )
        )
    )


def run_case(name, n, warm_n, timeout):
    backend = CASES[name][0]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, __file__, "--child", name, "--n", str(n), "--warm-n", str(warm_n)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(case=name, error=f"timed out after {timeout} s")
    total = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return dict(case=name, error=f"exit {proc.returncode}: " + " | ".join(tail)[-400:])
    result = json.loads(lines[-1])
    result["process_s"] = total
    return result


def table(results):
    rows = [
        "| backend / mode | workload | N | peak RSS | growth over warm-up | measured call | path |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        backend, mode, workload = CASES[r["case"]]
        what = "ALiBi + 8 documents + soft cap" if workload == "mods" else "plain"
        label = LABELS[backend, mode]
        if "error" in r:
            rows.append(f"| {label} | {what} | | failed: {r['error']} | | | |")
            continue
        ok = "" if r["peak_mib"] <= LIMIT_GIB * 1024 else " (over 4 GiB)"
        nan = "" if r["finite"] else ", NaN in the gradients"
        rows.append(
            f"| {label} | {what} | {r['n']} | {r['peak_mib'] / 1024:.2f} GiB{ok} | "
            f"{r['growth_mib']:.0f} MiB | {r['seconds']:.0f} s | {r['path']}{nan} |"
        )
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32768, help="sequence length (plain: N/2)")
    parser.add_argument("--warm-n", type=int, default=1024, help="warm-up length")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n % (2 * DOCUMENTS):
        parser.error(f"--n must be a multiple of {2 * DOCUMENTS}. Received: --n={args.n}")
    if args.child:
        child(args.child, args.n, args.warm_n)
        return
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    results = []
    for name in names:
        results.append(run_case(name, args.n, args.warm_n, args.timeout))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(
        f"forward + backward, B=1, H={HEADS}, D={DIM}, float32; peak RSS of each case's own "
        f"process (target <= {LIMIT_GIB:g} GiB)"
    )
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
