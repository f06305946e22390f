"""One small, deterministic example per public layer, for suite-wide checks.

Every public layer class exported by ``attnkit.layers`` must have an entry here:
``tests/test_portability.py`` fails for a layer without one, so a new layer
cannot be forgotten. An entry builds a functional model around the layer.
"""

import keras
import numpy as np


def _inputs(shapes):
    return [keras.Input(shape=s[1:]) for s in shapes]


def _data(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in shapes]


# name -> (constructor kwargs, input shapes, call style, call kwargs)
# call style: "single" (tensor), "list" (layer([a, b])), "qv" (layer(query, value)).
EXAMPLES = {
    "Attention": ({"score_mode": "general"}, [(2, 5, 8), (2, 7, 8)], "list", {}),
    "AdditiveAttention": ({"units": 6}, [(2, 5, 8), (2, 7, 8)], "list", {}),
    "MultiHeadAttention": (
        {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2},
        [(2, 5, 8), (2, 7, 8)],
        "qv",
        {},
    ),
    "AttentionPooling": ({"units": 6}, [(2, 7, 8)], "single", {}),
    "LocalAttention": ({"window": 2, "mode": "local-p"}, [(2, 5, 8), (2, 7, 8)], "list", {}),
    "HardAttention": ({"method": "topk", "k": 2}, [(2, 5, 8), (2, 7, 8)], "list", {}),
    "LuongAttention": ({"score_mode": "general"}, [(2, 5, 8), (2, 7, 8)], "list", {}),
    "BahdanauAttention": ({"units": 6}, [(2, 5, 8), (2, 7, 8)], "list", {}),
    "MonotonicAttention": ({"units": 6, "mode": "recursive"}, [(2, 5, 8), (2, 7, 8)], "list", {}),
    "ForwardAttention": ({"units": 6}, [(2, 5, 8), (2, 7, 8)], "list", {}),
    "LocationSensitiveAttention": (
        {"units": 6, "filters": 4, "kernel_size": 3},
        [(2, 5, 8), (2, 7, 8)],
        "list",
        {},
    ),
    # Inputs: decoder targets (B, Ty, F) and encoder memory (B, Tx, D).
    "AttentionRNNCell": ({}, [(2, 4, 3), (2, 7, 8)], "rnn_cell", {}),
}


def build_model(name, layer_cls):
    kwargs, shapes, style, call_kwargs = EXAMPLES[name]
    inputs = _inputs(shapes)
    if style == "rnn_cell":
        from attnkit.layers import BahdanauAttention

        cell = layer_cls(keras.layers.LSTMCell(8), BahdanauAttention(6), **kwargs)
        state = cell.get_initial_state(memory=inputs[1])
        out = keras.layers.RNN(cell, return_sequences=True)(inputs[0], initial_state=state)
        return keras.Model(inputs, out), _data(shapes)
    layer = layer_cls(**kwargs)
    if style == "single":
        out = layer(inputs[0], **call_kwargs)
    elif style == "list":
        out = layer(inputs, **call_kwargs)
    else:
        out = layer(*inputs, **call_kwargs)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], out), _data(shapes)
