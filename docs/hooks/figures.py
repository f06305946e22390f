"""MkDocs hook: draws every figure the mechanism and guide pages show.

Registered in ``mkdocs.yml`` under ``hooks:``. ``on_pre_build`` writes PNGs into
``docs/generated/`` (gitignored) before MkDocs collects the pages, so the build
always shows pictures of what the code computes now. Each figure comes from
real attnkit code: the weights of layers called on small constructed inputs,
the masks and biases of ``attnkit.ops.mods`` evaluated on index grids, and the
alignments of a tiny sequence-to-sequence model trained here for a few epochs.

The figures are cached by a hash of their generating source (this module and
the ``attnkit`` package) and the Keras backend: when nothing changed,
``on_pre_build`` returns at once, so ``mkdocs serve`` stays fast and does not
rewrite the files it watches. Run ``python docs/hooks/figures.py [--force] [NAME ...]``
to draw them without MkDocs, with ``KERAS_BACKEND``.

Inputs are built with NumPy from fixed seeds and the layers' weights are set
from NumPy arrays, so a figure shows the same picture on every backend.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
ROOT = DOCS.parent
OUT = DOCS / "generated"
STAMP = OUT / ".figures.json"

FIGURES = {}  # name -> function returning a matplotlib Figure
TRAINS = set()  # the figures that train a model: drawn where compiled training is fastest


def figure(name, trains=False):
    def register(fn):
        FIGURES[name] = fn
        if trains:
            TRAINS.add(name)
        return fn

    return register


def _np(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def _labels(n, prefix=""):
    return [f"{prefix}{i}" for i in range(n)]


# --- dot-product attention ---------------------------------------------------------


@figure("dot-product-scores")
def dot_product_scores():
    """The score modes of ``Attention`` on the same query and keys, one with padding."""
    import keras

    from attnkit.layers import Attention
    from attnkit.viz import plot_alignments

    rng = np.random.default_rng(0)
    keys = rng.normal(size=(1, 8, 16)).astype("float32")
    # Queries: noisy copies of keys 1, 3, 5, 7, 2, 6 (scaled so dot differs from cosine).
    picks = [1, 3, 5, 7, 2, 6]
    query = (keys[:, picks] * np.array([3, 1, 2, 0.5, 1, 2])[None, :, None]).astype("float32")
    query += 0.3 * rng.normal(size=query.shape).astype("float32")
    value_mask = np.array([[True] * 6 + [False] * 2])  # the last two keys are padding
    panels, titles = [], []
    for mode in ("dot", "scaled_dot", "cosine"):
        layer = Attention(score_mode=mode)
        _, w = layer([query, keys], mask=[None, value_mask], return_attention_scores=True)
        panels.append(_np(w)[0])
        titles.append(f'score_mode="{mode}"')
    layer = Attention(score_mode="scaled_dot")
    _, w = layer(
        [query, keys], mask=[None, value_mask], use_causal_mask=True, return_attention_scores=True
    )
    panels.append(_np(w)[0])
    titles.append('"scaled_dot", use_causal_mask=True')
    del keras
    return plot_alignments(
        np.stack(panels),
        query_labels=[f"q≈k{p}" for p in picks],
        key_labels=[f"k{j}" + (" pad" if j >= 6 else "") for j in range(8)],
        titles=titles,
        ncols=4,
        vmin=0.0,
        vmax=1.0,
        title="Attention weights: keys 6 and 7 are padding (value mask False)",
    )


# --- additive attention -------------------------------------------------------------


@figure("additive-init")
def additive_init():
    """Bahdanau's paper_init starts uniform; Keras' simplified form does not."""
    import keras

    from attnkit.layers import AdditiveAttention
    from attnkit.viz import plot_alignments

    rng = np.random.default_rng(1)
    query = rng.normal(size=(1, 5, 8)).astype("float32")
    value = rng.normal(size=(1, 7, 8)).astype("float32")
    value_mask = np.array([[True] * 5 + [False] * 2])
    panels, titles = [], []
    layer = AdditiveAttention()
    layer.build([query.shape, value.shape])
    layer.set_weights([np.ones(8, "float32")])
    _, w = layer([query, value], mask=[None, value_mask], return_attention_scores=True)
    panels.append(_np(w)[0])
    titles.append("AdditiveAttention() (Keras' form)")
    layer = AdditiveAttention(units=16, paper_init=True)
    _, w = layer([query, value], mask=[None, value_mask], return_attention_scores=True)
    panels.append(_np(w)[0])
    titles.append("units=16, paper_init=True")
    layer = AdditiveAttention(units=16)
    layer.build([query.shape, value.shape])
    layer.set_weights(
        [rng.normal(size=s).astype("float32") for s in (w_.shape for w_ in layer.weights)]
    )
    _, w = layer([query, value], mask=[None, value_mask], return_attention_scores=True)
    panels.append(_np(w)[0])
    titles.append("units=16, random N(0, 1) weights")
    del keras
    return plot_alignments(
        np.stack(panels),
        query_labels=_labels(5, "q"),
        key_labels=[f"k{j}" + (" pad" if j >= 5 else "") for j in range(7)],
        titles=titles,
        ncols=3,
        vmin=0.0,
        title="Additive attention weights (keys 5 and 6 padded)",
    )


# --- multi-head and grouped-query ---------------------------------------------------


@figure("multi-head-heads")
def multi_head_heads():
    """Per-head weights of a causal grouped-query layer with a sliding window."""
    from attnkit.layers import MultiHeadAttention
    from attnkit.viz import plot_alignments

    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 12, 16)).astype("float32")
    layer = MultiHeadAttention(num_heads=4, key_dim=8, num_key_value_heads=2, sliding_window=6)
    layer(x, x)
    layer.set_weights(
        [
            1.2 * rng.normal(size=w.shape).astype("float32") / np.sqrt(w.shape[0])
            for w in layer.weights
        ]
    )
    _, w = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    w = _np(w)[0]  # (H, Tq, Tv)
    titles = [f"head {h} (key/value head {h // 2})" for h in range(4)]
    return plot_alignments(
        w,
        query_labels=_labels(12),
        key_labels=_labels(12),
        titles=titles,
        ncols=4,
        vmin=0.0,
        title="MultiHeadAttention(4, 8, num_key_value_heads=2, sliding_window=6), causal",
    )


# --- transformer options --------------------------------------------------------------


def _grid(fn, t=16, heads=1):
    from keras import ops

    b = ops.zeros((1, 1, 1, 1), "int32")
    h = ops.reshape(ops.arange(heads, dtype="int32"), (1, heads, 1, 1))
    q = ops.reshape(ops.arange(t, dtype="int32"), (1, 1, t, 1))
    k = ops.reshape(ops.arange(t, dtype="int32"), (1, 1, 1, t))
    return fn(b, h, q, k)


@figure("transformer-biases")
def transformer_biases():
    """ALiBi's per-head bias and T5's buckets, evaluated by the mods themselves."""
    from keras import ops
    from matplotlib.figure import Figure

    from attnkit.ops import mods

    t = 16
    zeros = ops.zeros((1, 4, t, t), "float32")
    alibi = _np(_grid(lambda b, h, q, k: mods.alibi(4)(zeros, b, h, q, k), t, 4))[0]
    rel = np.arange(t)[None, :] - np.arange(t)[:, None]  # j - i
    buckets_bi = _np(mods.t5_bucket(rel, num_buckets=32, max_distance=128))
    buckets_causal = _np(mods.t5_bucket(rel, num_buckets=32, max_distance=128, bidirectional=False))
    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, 4)
    slopes = mods.alibi_slopes(4)
    for ax, h in zip(axes[:2], (0, 3), strict=True):
        im = ax.imshow(alibi[h], cmap="magma", interpolation="nearest")
        ax.set_title(f"ALiBi bias, head {h} (m = {slopes[h]:g})")
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax, data, name in (
        (axes[2], buckets_bi, "T5 bucket, bidirectional"),
        (axes[3], buckets_causal, "T5 bucket, bidirectional=False"),
    ):
        im = ax.imshow(data, cmap="tab20c", interpolation="nearest")
        ax.set_title(name)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes:
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    return fig


@figure("transformer-masks")
def transformer_masks():
    """The mask mods on a 32-token grid, and a block mask's classes."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    from attnkit.ops import block_mask, mods

    t = 32
    ids = np.repeat(np.arange(3), [12, 8, 12])[None].astype("int32")
    cases = [
        ("sliding_window(6) & causal", mods.and_masks(mods.causal_mask(), mods.sliding_window(6))),
        (
            "sliding_window_with_sinks(6, 4)\n& causal",
            mods.and_masks(mods.causal_mask(), mods.sliding_window_with_sinks(6, 4)),
        ),
        ("dilated_sliding_window(4, 3)", mods.dilated_sliding_window(4, 3)),
        (
            "document_mask(3 documents)\n& causal",
            mods.and_masks(mods.causal_mask(), mods.document_mask(ids)),
        ),
        ("prefix_lm(10)", mods.prefix_lm(10)),
    ]
    fig = Figure(figsize=(16, 3.6), layout="constrained")
    axes = fig.subplots(1, 6)
    for ax, (name, mod) in zip(axes[:5], cases, strict=True):
        m = _np(_grid(mod, t))[0, 0]
        ax.imshow(
            m, cmap=ListedColormap(["#f2f2f2", "#3b528b"]), vmin=0, vmax=1, interpolation="nearest"
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("key j")
    axes[0].set_ylabel("query i")
    doc_causal = mods.and_masks(mods.causal_mask(), mods.document_mask(ids))
    bm = block_mask(doc_causal, 1, 1, t, t, block_size=(8, 8))
    table = np.array(bm.table)
    ax = axes[5]
    ax.imshow(
        table,
        cmap=ListedColormap(["#f2f2f2", "#90b4d6", "#3b528b"]),
        vmin=0,
        vmax=2,
        interpolation="nearest",
    )
    for (i, j), c in np.ndenumerate(table):
        ax.text(
            j,
            i,
            "EPF"[c],
            ha="center",
            va="center",
            fontsize=9,
            color="white" if c == 2 else "black",
        )
    ax.set_title(f"block_mask of the documents, 8×8 blocks\nskipped: {bm.sparsity:.0%}", fontsize=9)
    ax.set_xlabel("key block")
    ax.set_ylabel("query block")
    return fig


# --- attention pooling ----------------------------------------------------------------


@figure("pooling-weights")
def pooling_weights():
    """Feed-forward attention pooling on the addition problem's inputs.

    The kernel is set by hand to read the marker channel: the weight goes to the
    two marked steps, and the padded tail gets none.
    """
    from attnkit.layers import AttentionPooling
    from attnkit.viz import plot_sequence_attention

    return _pooling_figure(AttentionPooling, plot_sequence_attention)


def _pooling_figure(AttentionPooling, plot_sequence_attention):
    rng = np.random.default_rng(3)
    t, lengths = 60, (60, 48)
    x = np.zeros((2, t, 2), "float32")
    marks = [[4, 31], [7, 22]]
    mask = np.zeros((2, t), bool)
    for b, n in enumerate(lengths):
        x[b, :n, 0] = rng.uniform(-1, 1, n)
        x[b, [0, n - 1], 1] = -1.0
        x[b, marks[b], 1] = 1.0
        mask[b, :n] = True
    layer = AttentionPooling(score="feedforward")
    layer.build(x.shape)
    layer.set_weights([np.array([[0.0], [3.0]], "float32"), np.zeros(1, "float32")])
    _, w = layer(x, mask=mask, return_attention_scores=True)
    return plot_sequence_attention(
        _np(w),
        highlight=marks,
        values=x[..., 0],
        titles=[f"length {n} of {t} (padded after {n})" for n in lengths],
        title="AttentionPooling(score='feedforward'): weight on the marked steps (red)",
    )


# --- local attention ------------------------------------------------------------------


@figure("local-window")
def local_window():
    """local-m and local-p windows: the Gaussian times the aligned weights."""
    from attnkit.layers import LocalAttention
    from attnkit.viz import plot_alignments

    rng = np.random.default_rng(4)
    tq, tv, d = 8, 20, 8
    query = rng.normal(size=(1, tq, d)).astype("float32")
    value = rng.normal(size=(1, tv, d)).astype("float32")
    panels, titles = [], []
    for mode, window in (("local-m", 3), ("local-m", 6)):
        layer = LocalAttention(window=window, mode=mode, score_mode="dot")
        _, w = layer([query, 0.2 * value], return_attention_scores=True)
        panels.append(_np(w)[0])
        titles.append(f'mode="{mode}", window={window}')
    layer = LocalAttention(window=3, mode="local-p", score_mode="dot")
    layer.build([query.shape, value.shape])
    # W_p, v_p set so that p_t moves along the source with the query's first feature.
    wp = np.zeros((d, d), "float32")
    wp[0, 0] = 1.0
    vp = np.zeros(d, "float32")
    vp[0] = 4.0
    layer.set_weights([wp, vp])
    q = query.copy()
    q[0, :, 0] = np.linspace(-1.2, 1.2, tq)
    _, w = layer([q, 0.2 * value], return_attention_scores=True)
    panels.append(_np(w)[0])
    titles.append('mode="local-p", window=3')
    return plot_alignments(
        np.stack(panels),
        query_labels=_labels(tq, "t"),
        key_labels=_labels(tv),
        titles=titles,
        ncols=3,
        vmin=0.0,
        title="LocalAttention weights: zero outside [p_t - D, p_t + D]",
    )


# --- hard attention -------------------------------------------------------------------


@figure("hard-weights")
def hard_weights():
    """Soft weights, Gumbel straight-through at inference (argmax) and top-k."""
    from attnkit.layers import Attention, HardAttention
    from attnkit.viz import plot_alignments

    rng = np.random.default_rng(5)
    query = rng.normal(size=(1, 6, 8)).astype("float32")
    value = rng.normal(size=(1, 10, 8)).astype("float32")
    mask = np.array([[True] * 8 + [False] * 2])
    panels, titles = [], []
    _, w = Attention()([query, value], mask=[None, mask], return_attention_scores=True)
    panels.append(_np(w)[0])
    titles.append("soft: Attention()")
    for layer, name in (
        (HardAttention(method="gumbel"), 'method="gumbel", inference'),
        (HardAttention(method="gumbel", seed=0), 'method="gumbel", training'),
        (HardAttention(method="topk", k=3), 'method="topk", k=3'),
    ):
        _, w = layer(
            [query, value],
            mask=[None, mask],
            return_attention_scores=True,
            training="training" in name,
        )
        panels.append(_np(w)[0])
        titles.append(name)
    return plot_alignments(
        np.stack(panels),
        query_labels=_labels(6, "q"),
        key_labels=[f"v{j}" + (" pad" if j >= 8 else "") for j in range(10)],
        titles=titles,
        ncols=4,
        vmin=0.0,
        vmax=1.0,
        title="Hard attention: one (or k) values per query; padded values never chosen",
    )


# --- monotonic and forward ------------------------------------------------------------


def _diagonal_inputs(tq=10, tv=14, d=8, seed=6):
    """Queries and memory whose dot products peak on a slanted diagonal."""
    rng = np.random.default_rng(seed)
    value = rng.normal(size=(1, tv, d)).astype("float32")
    value /= np.linalg.norm(value, axis=-1, keepdims=True)
    target = np.round(np.linspace(0, tv - 1, tq)).astype(int)
    query = (3.0 * value[:, target] + 0.2 * rng.normal(size=(1, tq, d))).astype("float32")
    return query, value


@figure("monotonic-modes")
def monotonic_modes():
    """Raffel 2017's three modes and forward attention on the same energies."""
    from attnkit.layers import ForwardAttention, LuongAttention, MonotonicAttention
    from attnkit.viz import plot_alignments

    query, value = _diagonal_inputs()
    tq, tv = query.shape[1], value.shape[1]
    panels, titles = [], []
    _, w = LuongAttention("dot")([query, value], return_attention_scores=True)
    panels.append(_np(w)[0])
    titles.append('soft: LuongAttention("dot")')
    for mode in ("parallel", "hard"):
        layer = MonotonicAttention(score="luong", mode=mode, normalize=False, score_bias_init=-1.0)
        layer.build([query.shape, value.shape])
        layer.set_weights(
            [
                np.eye(8, dtype="float32")
                if w_.shape == (8, 8)
                else np.full(w_.shape, -1.0, "float32")
                for w_ in layer.weights
            ]
        )
        _, w = layer([query, value], return_attention_scores=True)
        panels.append(_np(w)[0])
        titles.append(f'MonotonicAttention(mode="{mode}")')
    layer = ForwardAttention(units=8, transition_agent=False)
    layer.build([query.shape, value.shape])
    _, w = layer([query, value], return_attention_scores=True)
    panels.append(_np(w)[0])
    titles.append("ForwardAttention(8), untrained scores")
    return plot_alignments(
        np.stack(panels),
        query_labels=_labels(tq, "i"),
        key_labels=_labels(tv),
        titles=titles,
        ncols=4,
        vmin=0.0,
        vmax=1.0,
        title="Alignments over 10 output steps: monotonic modes move only forward",
    )


# --- location-sensitive ---------------------------------------------------------------


@figure("location-sensitive")
def location_sensitive():
    """The cumulative location term moves the alignment on when the query cannot.

    Hand-set weights, three units: unit 0 reads the position (earlier is
    better), unit 1 the cumulative alignment at j (already read: avoid), unit 2
    the cumulative alignment at j - 1 (the next position: go).
    """
    from attnkit.layers import BahdanauAttention, LocationSensitiveAttention
    from attnkit.viz import plot_alignments

    rng = np.random.default_rng(7)
    tq, tv, d = 10, 12, 4
    query = np.zeros((1, tq, d), "float32")  # the same query at every step
    value = rng.normal(size=(1, tv, d)).astype("float32")
    value[0, :, 0] = np.arange(tv)  # feature 0: the position
    memory_kernel = np.zeros((d, 3), "float32")
    memory_kernel[0, 0] = -0.05
    panels, titles = [], []
    plain = BahdanauAttention(3)
    plain.build([query.shape, value.shape])
    plain.set_weights(
        [np.zeros((d, 3), "float32"), memory_kernel, np.array([40.0, 0.0, 0.0], "float32")]
    )
    _, w = plain([query, value], return_attention_scores=True)
    panels.append(_np(w)[0])
    titles.append("BahdanauAttention(3): no location term")
    layer = LocationSensitiveAttention(3, filters=2, kernel_size=3, cumulative=True)
    layer.build([query.shape, value.shape])
    filters = np.zeros((3, 1, 2), "float32")
    filters[1, 0, 0] = 1.0  # f_0(j) = cumulative alignment at j
    filters[0, 0, 1] = 1.0  # f_1(j) = cumulative alignment at j - 1
    layer.set_weights(
        [
            np.zeros((d, 3), "float32"),  # query_kernel W: the query says nothing
            memory_kernel,  # memory_kernel V
            np.array([40.0, -20.0, 20.0], "float32"),  # attention_v
            filters,  # location_filters F
            np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 3.0]], "float32"),  # location_kernel U
        ]
    )
    _, w = layer([query, value], return_attention_scores=True)
    panels.append(_np(w)[0])
    titles.append("LocationSensitiveAttention(3, filters=2)")
    return plot_alignments(
        np.stack(panels),
        query_labels=_labels(tq, "i"),
        key_labels=_labels(tv),
        titles=titles,
        ncols=2,
        vmin=0.0,
        vmax=1.0,
        title="The same query at every step: only the location term moves the alignment",
    )


# --- recurrent decoder ----------------------------------------------------------------


@figure("recurrent-reverse", trains=True)
def recurrent_reverse():
    """Alignments of a tiny AttentionRNNCell decoder trained to reverse digits."""
    import keras

    import attnkit
    from attnkit.layers import AttentionRNNCell, LuongAttention
    from attnkit.viz import plot_alignments

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(8)
    n, t, v = 1024, 6, 10  # tokens 2..9; 1 = GO
    src = rng.integers(2, v, size=(n, t)).astype("int32")
    tgt = src[:, ::-1]
    dec_in = np.concatenate([np.ones((n, 1), "int32"), tgt[:, :-1]], axis=1)
    x = keras.Input((t,), dtype="int32")
    y_in = keras.Input((t,), dtype="int32")
    # A one-way GRU encoder: its state at j knows j, all the reversal needs (a
    # bidirectional one took 2x as long to build and train, for the same picture).
    memory = keras.layers.GRU(32, return_sequences=True)(keras.layers.Embedding(v, 16)(x))
    cell = AttentionRNNCell(
        keras.layers.GRUCell(32),
        LuongAttention("general"),
        attention_layer_size=32,
        attention_activation="tanh",
        memory_shape=(t, 32),
    )
    rnn = keras.layers.RNN(cell, return_sequences=True, name="decoder")
    state = cell.get_initial_state(memory=memory)
    h = rnn(keras.layers.Embedding(v, 16)(y_in), initial_state=state)
    model = keras.Model([x, y_in], keras.layers.Dense(v)(h))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit([src, dec_in], tgt, batch_size=32, epochs=4, verbose=0)
    test = np.array([[2, 3, 4, 5, 6, 7], [9, 9, 2, 8, 3, 3]], "int32")
    test_in = np.concatenate([np.ones((2, 1), "int32"), test[:, ::-1][:, :-1]], axis=1)
    maps = attnkit.attention_maps(model, [test, test_in])
    w = np.asarray(maps["decoder"])  # (B, Ty, Tv)
    acc = history.history["accuracy"][-1]
    return plot_alignments(
        w,
        query_labels=[f"output {i}" for i in range(t)],
        key_labels=[f"input {j}" for j in range(t)],
        titles=[f"input {' '.join(map(str, s))}" for s in test],
        ncols=2,
        vmin=0.0,
        vmax=1.0,
        title=f"AttentionRNNCell(GRUCell, LuongAttention) reversing digits "
        f"(4 epochs; token accuracy {acc:.0%} over the last one)",
    )


# --- seeing attention --------------------------------------------------------------


def _sentence_model():
    """Two self-attention layers over a sentence, weights from fixed NumPy draws."""
    import keras

    import attnkit

    rng = np.random.default_rng(10)
    tokens = "the cat sat on the mat because it was warm".split()
    ids = np.array([[1, 2, 3, 4, 1, 5, 6, 7, 8, 9]])
    x = keras.Input((10,), dtype="int32")
    h = keras.layers.Embedding(10, 16)(x)
    for i in range(2):
        h = h + attnkit.layers.MultiHeadAttention(num_heads=4, key_dim=8, name=f"layer{i}")(h, h)
    model = keras.Model(x, h)
    model.set_weights(
        [
            1.5 * rng.normal(size=w.shape).astype("float32") / np.sqrt(w.shape[0])
            for w in model.weights
        ]
    )
    return model, ids, tokens


@figure("views-head")
def views_head():
    """The head view's static export of a two-layer model."""
    import attnkit
    from attnkit.viz import head_view

    model, ids, tokens = _sentence_model()
    maps = attnkit.attention_maps(model, ids)
    return head_view(maps, tokens=tokens, layer="layer1").figure()


@figure("views-model")
def views_model():
    """The model view's static export: every layer x head."""
    import attnkit
    from attnkit.viz import model_view

    model, ids, tokens = _sentence_model()
    return model_view(attnkit.attention_maps(model, ids), tokens=tokens).figure()


@figure("explain-rollout")
def explain_rollout():
    """Raw head-averaged weights of each layer against rollout and flow."""
    import attnkit
    from attnkit import explain
    from attnkit.viz import plot_alignments

    model, ids, tokens = _sentence_model()
    maps = attnkit.attention_maps(model, ids)
    layers = [np.asarray(maps[f"layer{i}"])[0].mean(0) for i in range(2)]
    panels = [*layers, np.asarray(explain.rollout(maps))[0], np.asarray(explain.flow(maps))[0]]
    return plot_alignments(
        np.stack(panels),
        query_labels=tokens,
        key_labels=tokens,
        ncols=4,
        vmin=0.0,
        titles=[
            "layer 0, mean over heads",
            "layer 1, mean over heads",
            "rollout (residual 0.5)",
            "flow (residual 0.5)",
        ],
        title="What each token is made of: raw attention, rollout and flow",
    )


# --- masking guide --------------------------------------------------------------------


@figure("masking-combined")
def masking_combined():
    """Padding, causal and their AND, and the weights under them."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    from attnkit.ops import attention_weights, causal_mask, combine_masks, padding_mask

    t = 8
    pad = _np(padding_mask(np.array([6]), t))[0] > 0  # (T,)
    causal = _np(causal_mask(t, t)) > 0
    both = _np(combine_masks(pad[None, :] & pad[:, None], causal)) > 0
    rng = np.random.default_rng(9)
    q = rng.normal(size=(1, t, 8)).astype("float32")
    w = _np(attention_weights(q, q, mask=both[None]))[0]
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    cmap = ListedColormap(["#f2f2f2", "#3b528b"])
    for ax, m, name in (
        (axes[0], np.broadcast_to(pad[None, :] & pad[:, None], (t, t)), "padding (length 6)"),
        (axes[1], causal, "causal"),
        (axes[2], both, "AND of both"),
    ):
        ax.imshow(m, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name)
    im = axes[3].imshow(w, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    axes[3].set_title("weights: padded rows are all 0")
    fig.colorbar(im, ax=axes[3], shrink=0.8)
    for ax in axes:
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    return fig


# --- machinery ------------------------------------------------------------------------


def _installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


def backends() -> dict:
    """``{backend: [figure names]}``: which Keras backend draws which figures.

    ``ATTNKIT_FIGURES_BACKEND`` draws them all if set. Otherwise the eager
    figures go to PyTorch when it is installed (their small calls ran 3-7x
    faster there than on JAX, which compiles every new op shape) and the one
    that trains a model to JAX (compiled training steps; 60 s against 220 s on
    torch's eager RNN loop, both on the loaded 2-core machine); without those,
    ``KERAS_BACKEND`` (default JAX) draws everything. The pictures do not depend
    on the backend: inputs and weights come from NumPy.
    """
    default = os.environ.get("ATTNKIT_FIGURES_BACKEND") or os.environ.get("KERAS_BACKEND", "jax")
    eager = train = default
    if not os.environ.get("ATTNKIT_FIGURES_BACKEND"):
        eager = "torch" if _installed("torch") else default
        train = "jax" if _installed("jax") else default
    groups: dict = {}
    for name in FIGURES:
        groups.setdefault(train if name in TRAINS else eager, []).append(name)
    return groups


def source_hash(backend: str) -> str:
    """Hash of what draws the figures: this module, attnkit's sources, the backend."""
    digest = hashlib.sha256(backend.encode())
    files = [Path(__file__).resolve(), *sorted((ROOT / "attnkit").rglob("*.py"))]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _stamp(backend: str) -> Path:
    return OUT / f".figures-{backend}.json"


def is_current(backend: str, names) -> bool:
    """Whether docs/generated/ holds these figures drawn from today's sources."""
    stamp = _stamp(backend)
    if not stamp.exists():
        return False
    recorded = json.loads(stamp.read_text())
    return (
        recorded.get("hash") == source_hash(backend)
        and set(recorded.get("seconds", {})) == set(names)
        and all((OUT / f"{name}.png").exists() for name in names)
    )


def generate(names, force=False, log=print) -> dict:
    """Draws ``names`` into docs/generated/ with this process's backend, unless cached.

    Returns ``{name: seconds}`` for the figures drawn (empty when cached).
    """
    import keras

    backend = keras.backend.backend()
    if not force and is_current(backend, names):
        return {}
    sys.path.insert(0, str(ROOT))
    from attnkit.viz import save_figure

    OUT.mkdir(parents=True, exist_ok=True)
    times = {}
    for name in names:
        start = time.perf_counter()
        keras.utils.set_random_seed(0)
        fig = FIGURES[name]()
        save_figure(fig, OUT / f"{name}.png", dpi=100)
        times[name] = round(time.perf_counter() - start, 2)
        log(f"figures: {name}.png in {times[name]:.1f} s ({backend})")
    stamp = {"hash": source_hash(backend), "seconds": times}
    _stamp(backend).write_text(json.dumps(stamp, indent=1))
    return times


def on_pre_build(config, **kwargs):
    """MkDocs hook: redraws the figures whose sources changed, in subprocesses.

    The check needs no Keras import, so a build with current figures pays
    nothing. Each backend's figures are drawn in a process of their own (the
    two run at the same time), so the MkDocs process never imports a backend.
    """
    import logging

    from mkdocs.exceptions import PluginError

    log = logging.getLogger("mkdocs.hooks.figures")
    stale = {b: names for b, names in backends().items() if not is_current(b, names)}
    if not stale:
        return
    start = time.perf_counter()
    procs = {
        backend: subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *names],
            cwd=ROOT,
            env={**os.environ, "KERAS_BACKEND": backend, "MPLBACKEND": "Agg"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for backend, names in stale.items()
    }
    for backend, proc in procs.items():
        out, err = proc.communicate()
        for line in out.splitlines():
            if line.startswith("figures:"):
                log.info(line)
        if proc.returncode != 0:
            raise PluginError(f"docs/hooks/figures.py failed on {backend}:\n{err[-3000:]}")
    count = sum(len(names) for names in stale.values())
    log.info(f"figures: {count} drawn in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    # python docs/hooks/figures.py [--force] [NAME ...]: draws the named figures
    # (default: all) with KERAS_BACKEND.
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = [a for a in sys.argv[1:] if a != "--force"]
    t0 = time.perf_counter()
    drawn = generate(
        args or list(FIGURES), force="--force" in sys.argv, log=lambda m: print(m, flush=True)
    )
    print(f"{len(drawn)} figures in {time.perf_counter() - t0:.1f} s", flush=True)
