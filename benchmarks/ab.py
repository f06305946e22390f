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

``--suite mods`` (issue 17): attnkit's plain attention against the same call
with an ALiBi or a soft-cap ``score_mod`` (local mods: user functions, which
auto never treats as biases) and with the library's ``mods.alibi`` (marked
additive: on torch auto hands its bias, materialised once, to SDPA); on torch
also FlexAttention compiled with the same score_mods, and SDPA with the ALiBi
bias materialised outside the timing and built in every call.
``--before REV`` adds ``before:<name>`` rows: the same contenders from the
package at git revision REV, imported in the same process (the pattern of
``benchmarks/half_precision.py``), to show what a change did.
``--suite documents``: 8 equal packed documents, dense chunked attention
against the same call with a document ``block_mask`` (and the mask_mod
without one).
``--suite dropout`` (issue 17): forward + backward (the gradient of
``sum(out)`` wrt q = k = v) of the chunked path with and without attention
dropout (rate 0.1, training), and the naive path with dropout (what dropout
fell back to before) at N <= 2048.
"""

import argparse
import importlib
import json
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


CAP = 30.0


def alibi_slopes(heads):
    return (2.0 ** (-8.0 * np.arange(1, heads + 1) / heads)).astype("float32")


def alibi(score, b, h, q, kv, slopes):
    return score - ops.reshape(slopes, (1, -1, 1, 1)) * ops.cast(ops.abs(q - kv), score.dtype)


def softcap(score, b, h, q, kv):
    return CAP * ops.tanh(score / CAP)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_before(revision):
    """``attnkit.ops`` at git ``revision``, importable as ``attnkit_before.ops``."""
    root = tempfile.mkdtemp(prefix="attnkit_before_")
    files = subprocess.run(
        ["git", "-C", ROOT, "ls-tree", "-r", "--name-only", revision, "attnkit"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for path in files:
        if not path.endswith(".py"):
            continue
        text = subprocess.run(
            ["git", "-C", ROOT, "show", f"{revision}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        text = re.sub(r"\battnkit\b", "attnkit_before", text)
        target = os.path.join(root, "attnkit_before" + path[len("attnkit") :])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            f.write(text)
    sys.path.insert(0, root)
    return importlib.import_module("attnkit_before.ops")


def mod_contenders(backend, n, ops_module=None, peers=True):
    if ops_module is None:
        import attnkit.ops as ops_module
    attention, lib_mods = ops_module.attention, ops_module.mods

    slopes = ops.convert_to_tensor(alibi_slopes(8))
    lib_alibi = lib_mods.alibi(8)  # one mod object, as a layer holds it
    fs = {
        "plain": lambda q: attention(q, q, q),
        "alibi": lambda q: attention(q, q, q, score_mod=alibi, score_mod_params=(slopes,)),
        "softcap": lambda q: attention(q, q, q, score_mod=softcap),
        "mods.alibi": lambda q: attention(q, q, q, score_mod=lib_alibi),
    }
    if backend == "torch" and peers:
        import torch
        from torch.nn.attention.flex_attention import flex_attention

        torch_slopes = torch.tensor(alibi_slopes(8))

        def flex_alibi(score, b, h, q_idx, kv_idx):
            return score - torch_slopes[h] * (q_idx - kv_idx).abs()

        def flex_softcap(score, b, h, q_idx, kv_idx):
            return CAP * torch.tanh(score / CAP)

        flex = torch.compile(flex_attention)
        pos = torch.arange(n)

        def alibi_bias():
            bias = -torch_slopes[:, None, None] * (pos[:, None] - pos[None, :]).abs()  # (H, N, N)
            return bias[None]  # (1, H, N, N): 512 MiB at N=4096

        bias = alibi_bias()

        def sdpa(x, attn_mask=None):
            x = x.transpose(1, 2)
            out = torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=attn_mask)
            return out

        fs["sdpa"] = sdpa
        fs["sdpa+alibi-bias"] = lambda q: sdpa(q, bias)
        fs["sdpa+alibi-bias built per call"] = lambda q: sdpa(q, alibi_bias())
        fs["flex+alibi"] = lambda q: flex(*(q.transpose(1, 2),) * 3, score_mod=flex_alibi)
        fs["flex+softcap"] = lambda q: flex(*(q.transpose(1, 2),) * 3, score_mod=flex_softcap)
    return _compiled(backend, fs)


def document_contenders(backend, n, documents=8, ops_module=None):
    if ops_module is None:
        import attnkit.ops as ops_module
    attention, block_mask = ops_module.attention, ops_module.block_mask

    size = n // documents

    def same_document(b, h, q, kv):
        return q // size == kv // size

    bm = block_mask(same_document, 1, 1, n, n, block_size=(256, 256))
    fs = {
        "dense": lambda q: attention(q, q, q, implementation="chunked", block_size=(256, 256)),
        "documents+block_mask": lambda q: attention(q, q, q, block_mask=bm),
        "documents mask_mod only": lambda q: attention(
            q, q, q, mask_mod=same_document, implementation="chunked", block_size=(256, 256)
        ),
    }
    return _compiled(backend, fs)


DROPOUT_RATE = 0.1


def dropout_contenders(backend, n):
    from attnkit.ops import attention

    def chunked(q):
        return attention(q, q, q, implementation="chunked")

    def chunked_dropout(q):
        return attention(
            q, q, q, implementation="chunked", dropout=DROPOUT_RATE, training=True, seed=1
        )

    def naive_dropout(q):
        return attention(
            q, q, q, implementation="naive", dropout=DROPOUT_RATE, training=True, seed=1
        )

    fs = {"chunked": chunked, "chunked+dropout": chunked_dropout}
    if n <= 2048:  # (B, H, N, N) float32 scores: 128 MiB each at N=2048
        fs["naive+dropout"] = naive_dropout
    return {name: _gradient(backend, f) for name, f in fs.items()}


def _gradient(backend, f):
    """q -> d sum(f(q)) / dq, compiled like the forward contenders."""
    if backend == "jax":
        import jax

        return jax.jit(jax.grad(lambda q: ops.sum(f(q))))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def tf_grad(q):
            with tf.GradientTape() as tape:
                tape.watch(q)
                value = ops.sum(f(q))
            return tape.gradient(value, q)

        return tf_grad

    def torch_grad(q):
        q = q.detach().requires_grad_(True)
        ops.sum(f(q)).backward()
        return q.grad

    return torch_grad


def _compiled(backend, fs):
    if backend == "jax":
        import jax

        return {name: jax.jit(f) for name, f in fs.items()}
    if backend == "tensorflow":
        import tensorflow as tf

        return {name: tf.function(f) for name, f in fs.items()}
    return fs


def run(n, causal, rounds, suite="peers", before=None, only=None, first=None):
    backend = keras.backend.backend()
    q = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(1, n, 8, 64)), "float32")
    if suite == "mods":
        fs = mod_contenders(backend, n)
        if before is not None:
            old = mod_contenders(backend, n, before, peers=False)
            fs.update({f"before:{k}": f for k, f in old.items()})
    elif suite == "documents":
        fs = document_contenders(backend, n)
        if before is not None:
            old = document_contenders(backend, n, ops_module=before)
            fs.update({f"before:{k}": f for k, f in old.items()})
    elif suite == "dropout":
        fs = dropout_contenders(backend, n)
    else:
        fs = contenders(backend, causal)
        if before is not None:
            fs["before:auto"] = _compiled(
                backend, {"a": lambda q: before.attention(q, q, q, causal=causal)}
            )["a"]
    if only:
        fs = {k: f for k, f in fs.items() if k in only or k == first}
    times = {name: [] for name in fs}

    def call(f):
        if backend == "torch" and suite != "dropout":  # dropout: gradients are timed
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
    parser.add_argument(
        "--suite", choices=("peers", "mods", "documents", "dropout"), default="peers"
    )
    parser.add_argument("--json")
    parser.add_argument("--before", help="a git revision whose attnkit runs alongside")
    parser.add_argument(
        "--only", nargs="+", help="run only these contenders (and the suite's first)"
    )
    args = parser.parse_args()
    backend = keras.backend.backend()
    before = None if args.before is None else import_before(args.before)
    if args.suite != "peers":
        first = {"mods": "plain", "documents": "dense", "dropout": "chunked"}[args.suite]
        print(f"| backend | N | contender | ms | / {first} |")
        print("|---|---|---|---|---|")
        for n in args.n:
            ms = run(n, False, args.rounds, args.suite, before, args.only, first)
            for name, t in ms.items():
                print(f"| {backend} | {n} | {name} | {t:.0f} | {t / ms[first]:.2f} |", flush=True)
        return
    causals = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]
    rows = []
    print("| backend | N | causal | auto ms | best peer | peer ms | auto / peer | all (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.n:
        for causal in causals:
            ms = run(n, causal, args.rounds, before=before, only=args.only, first="auto")
            peers = {k: v for k, v in ms.items() if k not in ("auto", "before:auto")}
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
