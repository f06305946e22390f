"""Layer outputs before and after a refactor: a snapshot of every layer's output.

Builds each public layer in many configurations (every score mode, masks,
causal and windows, every implementation, attention axes, the key/value
cache) plus every example of ``attnkit.testing.registry``, with weights from
``keras.utils.set_random_seed(0)``, on fixed inputs, and saves the outputs.
Run it on the old tree and the new one (same backend), then compare:

    KERAS_BACKEND=torch python benchmarks/layer_snapshot.py before.npz   # old tree
    KERAS_BACKEND=torch python benchmarks/layer_snapshot.py after.npz    # new tree
    python benchmarks/layer_snapshot.py --compare before.npz after.npz

(``EXAMPLES_DIR`` may name a folder holding an older ``layer_examples.py``.)
"""

# Each case() runs its lambdas at once, inside its loop iteration.
# ruff: noqa: B023

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np

from attnkit import layers as L


def compare(before, after):
    a, b = np.load(before), np.load(after)
    ka, kb = set(a.files), set(b.files)
    print("only before:", sorted(ka - kb)[:10], "only after:", sorted(kb - ka)[:10])
    worst = 0
    bad = []
    for k in sorted(ka & kb):
        x, y = a[k], b[k]
        if x.shape != y.shape:
            bad.append((k, "shape", x.shape, y.shape))
            continue
        d = float(np.max(np.abs(x.astype("float64") - y))) if x.size else 0.0
        if not np.isfinite(d) and np.array_equal(np.isnan(x), np.isnan(y)):
            d = 0.0
        worst = max(worst, d)
        if d > 0:
            bad.append((k, d))
    print(
        f"{len(ka & kb)} arrays compared, {sum(1 for b_ in bad)} differ, max abs diff {worst:.3g}"
    )
    for item in bad[:40]:
        print("  ", item)


def snapshot(path):
    rng = np.random.default_rng(0)

    def data(*shapes):
        return [rng.normal(size=s).astype("float32") for s in shapes]

    def mask(b, t, seed):
        lengths = np.maximum(1, (np.arange(b) * 3 + seed) % t)
        return np.arange(t)[None, :] < lengths[:, None]

    out = {}

    def record(name, result):
        res = result if isinstance(result, (list, tuple)) else [result]
        for i, r in enumerate(res):
            out[f"{name}/{i}"] = keras.ops.convert_to_numpy(r)

    def case(name, make, call):
        keras.utils.set_random_seed(0)
        layer = make()
        try:
            record(name, call(layer))
        except Exception as e:
            print("FAILED", name, type(e).__name__, str(e)[:200])

    q, v, k = data((2, 5, 8), (2, 7, 8), (2, 7, 6))
    x = data((2, 9, 16))[0]
    qm, vm = mask(2, 5, 1), mask(2, 7, 2)
    for mode in ("dot", "scaled_dot", "general", "cosine", "concat"):
        for use_scale in (False, True):
            case(
                f"Attention/{mode}/{use_scale}",
                lambda: L.Attention(use_scale=use_scale, score_mode=mode),
                lambda layer: layer([q, v], mask=[qm, vm], return_attention_scores=True),
            )
            case(
                f"Attention/{mode}/{use_scale}/causal",
                lambda: L.Attention(use_scale=use_scale, score_mode=mode, sliding_window=3),
                lambda layer: layer([q, v], use_causal_mask=True, return_attention_scores=True),
            )
    case(
        "Attention/general/key",
        lambda: L.Attention(score_mode="general"),
        lambda layer: layer([q, v, k], mask=[qm, vm, mask(2, 7, 5)], return_attention_scores=True),
    )
    case(
        "Attention/window",
        lambda: L.Attention(sliding_window=2),
        lambda layer: layer([q, v], return_attention_scores=True),
    )
    case(
        "Attention/4d",
        lambda: L.Attention(),
        lambda layer: layer(
            [np.stack([q, q], 1), np.stack([v, v], 1)], return_attention_scores=True
        ),
    )
    for units in (None, 6):
        for use_scale in (False, True):
            case(
                f"Additive/{units}/{use_scale}",
                lambda: L.AdditiveAttention(units=units, use_scale=use_scale),
                lambda layer: layer([q, v], mask=[qm, vm], return_attention_scores=True),
            )
            case(
                f"Additive/{units}/{use_scale}/causal",
                lambda: L.AdditiveAttention(units=units, use_scale=use_scale),
                lambda layer: layer([q, v], use_causal_mask=True, return_attention_scores=True),
            )
    case(
        "Additive/key",
        lambda: L.AdditiveAttention(units=4),
        lambda layer: layer([q, v, k], return_attention_scores=True),
    )

    mha = dict(num_heads=4, key_dim=4)
    for impl in ("auto", "naive", "chunked", "fused"):
        case(
            f"MHA/{impl}/self_causal",
            lambda: L.MultiHeadAttention(**mha, implementation=impl),
            lambda layer: layer(x, x, use_causal_mask=True),
        )
        case(
            f"MHA/{impl}/gqa_window",
            lambda: L.MultiHeadAttention(
                **mha, num_key_value_heads=2, sliding_window=3, implementation=impl
            ),
            lambda layer: layer(x, x, use_causal_mask=True),
        )
        case(
            f"MHA/{impl}/cross_mask",
            lambda: L.MultiHeadAttention(**mha, implementation=impl),
            lambda layer: layer(q, v, query_mask=qm, value_mask=vm),
        )
        case(
            f"MHA/{impl}/window_cross",
            lambda: L.MultiHeadAttention(**mha, sliding_window=2, implementation=impl),
            lambda layer: layer(q, v),
        )
    case(
        "MHA/scores",
        lambda: L.MultiHeadAttention(**mha, num_key_value_heads=1),
        lambda layer: layer(q, v, k, value_mask=vm, return_attention_scores=True),
    )
    case(
        "MHA/attn_mask",
        lambda: L.MultiHeadAttention(**mha),
        lambda layer: layer(
            q, v, attention_mask=rng.random((2, 5, 7)) > 0.3, return_attention_scores=True
        ),
    )
    case(
        "MHA/attn_mask_heads",
        lambda: L.MultiHeadAttention(**mha),
        lambda layer: layer(
            q,
            v,
            attention_mask=np.random.default_rng(3).random((2, 4, 5, 7)) > 0.3,
            return_attention_scores=True,
        ),
    )
    case(
        "MHA/gate_out",
        lambda: L.MultiHeadAttention(**mha, use_gate=True, output_shape=(3, 2), value_dim=5),
        lambda layer: layer(q, v, return_attention_scores=True),
    )
    img = data((2, 3, 4, 8))[0]
    case(
        "MHA/axes12",
        lambda: L.MultiHeadAttention(**mha),
        lambda layer: layer(img, img, return_attention_scores=True),
    )
    case(
        "MHA/axes2",
        lambda: L.MultiHeadAttention(**mha, attention_axes=(2,)),
        lambda layer: layer(img, img, use_causal_mask=True, return_attention_scores=True),
    )
    case(
        "MHA/axes1_mask",
        lambda: L.MultiHeadAttention(**mha, attention_axes=1),
        lambda layer: layer(
            img,
            img,
            attention_mask=np.random.default_rng(4).random((2, 4, 3, 3)) > 0.3,
            return_attention_scores=True,
        ),
    )
    big = data((1, 700, 16))[0]
    for impl in ("naive", "chunked", "fused"):
        case(
            f"MHA/big/{impl}",
            lambda: L.MultiHeadAttention(
                num_heads=2, key_dim=8, num_key_value_heads=1, implementation=impl
            ),
            lambda layer: layer(big, big, use_causal_mask=True),
        )
    case(
        "MHA/flash_false",
        lambda: L.MultiHeadAttention(**mha, flash_attention=False),
        lambda layer: layer(big, big),
    )

    def decode(layer):
        keras.utils.set_random_seed(0)
        full = layer(x, x, use_causal_mask=True)
        cache = np.zeros((2, 2, 9, 2, 4), "float32")
        steps = []
        for t in range(9):
            o, cache = layer(
                x[:, t : t + 1],
                x[:, t : t + 1],
                use_causal_mask=True,
                cache=cache,
                cache_update_index=t,
            )
            steps.append(o)
        return [full, keras.ops.concatenate(steps, 1), cache]

    case(
        "MHA/cache",
        lambda: L.MultiHeadAttention(**mha, num_key_value_heads=2, sliding_window=4),
        decode,
    )

    sys.path.insert(0, os.environ.get("EXAMPLES_DIR", "tests"))
    try:
        from layer_examples import EXAMPLES, build_model
    except ImportError:
        from attnkit.testing.registry import EXAMPLES, build_model  # noqa
    for name in sorted(EXAMPLES):
        keras.utils.set_random_seed(0)
        try:
            model, d = build_model(name, getattr(L, name))
            record(f"example/{name}", model(d if len(d) > 1 else d[0]))
        except Exception as e:
            print("FAILED example", name, e)
    np.savez(path, **out)
    print(len(out), "arrays ->", path, keras.backend.backend())


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        snapshot(sys.argv[1])
