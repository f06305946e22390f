"""``attnkit bench``: attention time, peak memory and GFLOP/s against the peers.

Every configuration (backend, implementation, N, pass, causal) runs in its own
subprocess, so its peak RSS (``ru_maxrss``) is its own. Inputs are float32,
self-attention (B, N, H, D); the time is the median over ``--repeats`` calls
after one warm-up call (JAX functions are ``jax.jit``-compiled and TensorFlow
ones wrapped in ``tf.function``, both during warm-up). A configuration that
fails (allocation error, out of memory, ``--timeout``) shows as ``fails``.

Implementations: ``auto`` (attnkit's default), ``naive``, ``chunked``,
``fused`` (attnkit's paths), ``keras-dpa`` (``keras.ops.dot_product_attention``),
``keras-mha`` (the core of ``keras.layers.MultiHeadAttention``, its
``_compute_attention`` on projected heads) and ``native`` (the backend's own
fused op: torch ``F.scaled_dot_product_attention``,
``jax.nn.dot_product_attention``; none on TensorFlow).

    attnkit bench                                   # naive vs chunked vs auto, N = 1k, 4k, 16k
    attnkit bench --impls all --n 1024 4096 8192 --causal both --passes fwd fwd+bwd
    attnkit bench --backends jax torch tensorflow --json results.json --plot results.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from attnkit import _checks
from attnkit.cli.main import BACKENDS

IMPLS = ("auto", "naive", "chunked", "fused", "keras-dpa", "keras-mha", "native")
DEFAULT_IMPLS = ("naive", "chunked", "auto")
PASSES = ("fwd", "fwd+bwd")


def add_arguments(parser):
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=None,
        help="backends to run, each configuration in its own process "
        "(default: the current backend)",
    )
    parser.add_argument(
        "--n",
        nargs="+",
        type=int,
        default=[1024, 4096, 16384],
        help="sequence lengths N (default: 1024 4096 16384)",
    )
    parser.add_argument(
        "--impls",
        nargs="+",
        default=list(DEFAULT_IMPLS),
        help=f"implementations: {' '.join(IMPLS)} or 'all' (default: naive chunked auto)",
    )
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=["fwd"])
    parser.add_argument(
        "--causal",
        choices=("no", "yes", "both"),
        default="no",
        help="causal self-attention (default: no)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=None, help="grouped-query K/V heads")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed calls after the warm-up (default: 5); 0 times the single "
        "cold call (for memory runs at very large N)",
    )
    parser.add_argument(
        "--block-size",
        nargs=2,
        type=int,
        default=None,
        metavar=("BQ", "BK"),
        help="block size of the chunked implementation",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds per configuration before it counts as failed (default: 300)",
    )
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument(
        "--plot",
        metavar="PNG",
        nargs="?",
        const="bench.png",
        help="save a time-vs-N plot (default path: bench.png)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)


def flops(cfg):
    """Useful floating-point operations: 4·B·H·N²·D forward (QKᵀ and PV), 2.5×
    that again backward (five matmuls); half of each when causal."""
    n = cfg["n"]
    total = 4.0 * cfg["batch"] * cfg["heads"] * n * n * cfg["dim"]
    if cfg["pass"] == "fwd+bwd":
        total *= 3.5
    if cfg["causal"]:
        total /= 2
    return total


def _impls(args):
    """The implementations ``--impls`` names; raises ``ValueError`` on an unknown one."""
    if args.impls == ["all"]:
        return list(IMPLS)
    return [_checks.one_of(name, "--impls", IMPLS) for name in args.impls]


def _configs(args, backend, impls):
    causal = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]
    for pass_ in args.passes:
        for c in causal:
            for impl in impls:
                if impl == "native" and backend == "tensorflow":
                    continue
                for n in args.n:
                    yield {
                        "backend": backend,
                        "impl": impl,
                        "n": n,
                        "pass": pass_,
                        "causal": c,
                        "batch": args.batch,
                        "heads": args.heads,
                        "kv_heads": args.kv_heads or args.heads,
                        "dim": args.dim,
                        "repeats": args.repeats,
                        "block_size": args.block_size,
                    }


def _run_child(cfg, timeout):
    env = {**os.environ, "KERAS_BACKEND": cfg["backend"], "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "attnkit.cli.bench", "--child", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**cfg, "status": "fails", "error": f"timeout after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return {**cfg, **json.loads(line)}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    if proc.returncode < 0:
        tail = [f"killed by signal {-proc.returncode} (out of memory?)"]
    return {**cfg, "status": "fails", "error": tail[0][:200]}


def _fmt_row(r):
    if r["status"] != "ok":
        return "fails"
    return f"{r['median_ms']:.1f} ms ({r['peak_rss_gib']:.2f} GiB, {r['gflops']:.0f} GF/s)"


def _table(results):
    lines = []
    ns = sorted({r["n"] for r in results})
    keys = []
    for r in results:
        key = (r["backend"], r["pass"], r["causal"], r["impl"])
        if key not in keys:
            keys.append(key)
    header = "| backend | pass | causal | impl | " + " | ".join(f"N={n}" for n in ns) + " |"
    lines += [header, "|" + "---|" * (4 + len(ns))]
    for key in keys:
        cells = []
        for n in ns:
            match = [
                r
                for r in results
                if (r["backend"], r["pass"], r["causal"], r["impl"]) == key and r["n"] == n
            ]
            cells.append(_fmt_row(match[0]) if match else "")
        b, p, c, i = key
        lines.append(f"| {b} | {p} | {'yes' if c else 'no'} | {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    groups = {}
    for r in results:
        if r["status"] == "ok":
            label = f"{r['backend']} {r['impl']} {r['pass']}{' causal' if r['causal'] else ''}"
            groups.setdefault(label, []).append((r["n"], r["median_ms"]))
    for label, points in groups.items():
        points.sort()
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel("median ms")
    ax.legend(fontsize=6)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def run(args):
    if args.child:
        child_main(json.loads(args.child))
        return 0
    import keras

    from attnkit._optional import require

    if args.plot:  # fail now, not after the benchmark has run
        require("matplotlib", "attnkit bench --plot")
    try:
        impls = _impls(args)
    except ValueError as error:
        print(f"attnkit bench: {error}", file=sys.stderr)
        return 2
    backends = args.backends or [keras.backend.backend()]
    results = []
    for backend in backends:
        for cfg in _configs(args, backend, impls):
            r = _run_child(cfg, args.timeout)
            if r["status"] == "ok":
                r["gflops"] = flops(r) / (r["median_ms"] * 1e6)
            results.append(r)
            status = _fmt_row(r) if r["status"] == "ok" else f"fails: {r.get('error', '')}"
            print(
                f"  {backend:<10} {cfg['impl']:<9} {cfg['pass']:<7} "
                f"{'causal' if cfg['causal'] else '      '} N={cfg['n']:<6} {status}",
                file=sys.stderr,
                flush=True,
            )
    b, h, d = args.batch, args.heads, args.dim
    print(
        f"float32 self-attention, B={b}, H={h}, Hkv={args.kv_heads or h}, D={d}; median of "
        f"{args.repeats} after warm-up; time (peak RSS, GFLOP/s)"
    )
    print(_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        _plot(results, args.plot)
    return 0


# The child: one configuration, one process. ---------------------------------


def _function(cfg):
    """A zero-argument callable running the configuration once, synchronously."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    b, n, h, hkv, d = cfg["batch"], cfg["n"], cfg["heads"], cfg["kv_heads"], cfg["dim"]
    causal, impl, grad = cfg["causal"], cfg["impl"], cfg["pass"] == "fwd+bwd"
    rng = np.random.default_rng(0)
    q = rng.standard_normal((b, n, h, d), dtype=np.float32)
    k = rng.standard_normal((b, n, hkv, d), dtype=np.float32)
    v = rng.standard_normal((b, n, hkv, d), dtype=np.float32)
    block = tuple(cfg["block_size"]) if cfg.get("block_size") else None

    mha = None
    if impl == "keras-mha":  # built outside any traced function (TF variables)
        mha = keras.layers.MultiHeadAttention(num_heads=h, key_dim=d)
        mha.build((b, n, h * d), (b, n, h * d))

    def attend(q, k, v):
        from keras import ops

        if impl in ("auto", "naive", "chunked", "fused"):
            from attnkit.ops import attention

            return attention(q, k, v, causal=causal, implementation=impl, block_size=block)
        if impl == "keras-dpa":
            return ops.dot_product_attention(q, k, v, is_causal=causal)
        if impl == "keras-mha":
            out, _ = mha._compute_attention(q, k, v, use_causal_mask=causal)
            return out
        if impl == "native":
            if backend == "torch":
                import torch.nn.functional as F

                out = F.scaled_dot_product_attention(
                    q.transpose(1, 2),
                    k.transpose(1, 2),
                    v.transpose(1, 2),
                    is_causal=causal,
                    enable_gqa=h != hkv,
                )
                return out.transpose(1, 2)
            if backend == "jax":
                import jax

                return jax.nn.dot_product_attention(q, k, v, is_causal=causal)
        raise ValueError(f"no {impl!r} implementation on {backend}")

    def loss(q, k, v):
        from keras import ops

        return ops.sum(attend(q, k, v))

    if backend == "jax":
        import jax

        fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)) if grad else attend)
        args = [jax.numpy.asarray(t) for t in (q, k, v)]
        return lambda: jax.block_until_ready(fn(*args))
    if backend == "tensorflow":
        import tensorflow as tf

        args = [tf.constant(t) for t in (q, k, v)]
        if grad:

            @tf.function
            def fn(q, k, v):
                with tf.GradientTape() as tape:
                    tape.watch([q, k, v])
                    value = loss(q, k, v)
                return tape.gradient(value, [q, k, v])
        else:
            fn = tf.function(attend)
        return lambda: [t.numpy() for t in tf.nest.flatten(fn(*args))][:1]
    import torch

    args = [torch.from_numpy(t).requires_grad_(grad) for t in (q, k, v)]
    if grad:

        def run_grad():
            for t in args:
                t.grad = None
            loss(*args).backward()

        return run_grad

    def run_fwd():
        with torch.no_grad():
            attend(*args)

    return run_fwd


def child_main(cfg):
    import resource

    try:
        fn = _function(cfg)
        t0 = time.perf_counter()
        fn()  # warm-up: compilation, tracing, first-touch of buffers
        times = [time.perf_counter() - t0] if cfg["repeats"] == 0 else []
        for _ in range(cfg["repeats"]):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        result = {
            "status": "ok",
            "median_ms": 1e3 * statistics.median(times),
            "times_ms": [1e3 * t for t in times],
        }
    except Exception as error:  # an allocation failure is a result, not a crash
        result = {
            "status": "fails",
            "error": f"{type(error).__name__}: {str(error)[:160]}",
        }
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="attnkit bench")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
