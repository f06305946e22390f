"""Greedy, beam-search and sampling decoding with fixed weights; prints one JSON line.

Usage: KERAS_BACKEND=<b> python decode_check.py

Builds embedding -> AttentionRNNCell(LSTMCell, mechanism) -> Dense for three
mechanisms (Bahdanau; location-sensitive and monotonic carry their alignment
in the state, so beam reordering must move it too), sets every weight from a
seeded NumPy generator (Keras' own initialisers draw differently per
backend), and decodes a padded memory. The same numbers must come out on
every backend.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from attnkit.decoding import beam_search, cell_step, greedy_decode, sample_decode  # noqa: E402
from attnkit.layers import (  # noqa: E402
    AttentionRNNCell,
    BahdanauAttention,
    LocationSensitiveAttention,
    MonotonicAttention,
)

VOCAB, START, END, MAX_LENGTH = 7, 1, 0, 8


def mechanisms():
    return {
        "bahdanau": BahdanauAttention(6),
        "location_sensitive": LocationSensitiveAttention(6, filters=4, kernel_size=3),
        "monotonic_hard": MonotonicAttention(6, mode="hard"),
    }


def run():
    rng = np.random.default_rng(1234)
    memory = rng.normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]], bool)  # padded rows
    results = {}
    for name, mechanism in mechanisms().items():
        cell = AttentionRNNCell(keras.layers.LSTMCell(8), mechanism, attention_layer_size=8)
        embedding = keras.layers.Embedding(VOCAB, 4)
        projection = keras.layers.Dense(VOCAB)
        states = cell.get_initial_state(memory=memory, memory_mask=mask)
        step = cell_step(cell, embedding, projection)
        step(keras.ops.full((3,), START, "int32"), states)  # builds every layer
        for layer in (embedding, cell, projection):
            layer.set_weights(
                [rng.normal(scale=1.0, size=w.shape).astype("float32") for w in layer.weights]
            )
        states = cell.get_initial_state(memory=memory, memory_mask=mask)
        out = {}
        g = greedy_decode(step, states, start_token=START, end_token=END, max_length=MAX_LENGTH)
        b = beam_search(
            step,
            states,
            start_token=START,
            end_token=END,
            max_length=MAX_LENGTH,
            beam_width=3,
            length_penalty=0.6,
        )
        # The coverage penalty reads each beam's alignment through cell_step's
        # step.alignment (with these weights it changes no ranking or score;
        # tests/test_decoding.py has cases where it does); sampling draws from
        # counter-based noise.
        c = beam_search(
            step,
            states,
            start_token=START,
            end_token=END,
            max_length=MAX_LENGTH,
            beam_width=3,
            length_penalty=0.6,
            coverage_penalty_weight=0.5,
        )
        s = sample_decode(
            step,
            states,
            start_token=START,
            end_token=END,
            max_length=MAX_LENGTH,
            seed=7,
            temperature=0.8,
            top_k=4,
            top_p=0.9,
        )
        for kind, (tokens, scores, lengths) in (
            ("greedy", g),
            ("beam", b),
            ("beam_coverage", c),
            ("sample", s),
        ):
            out[kind] = {
                "tokens": keras.ops.convert_to_numpy(tokens).tolist(),
                "scores": keras.ops.convert_to_numpy(scores).tolist(),
                "lengths": keras.ops.convert_to_numpy(lengths).tolist(),
            }
        results[name] = out
    return results


if __name__ == "__main__":
    print(json.dumps(run()))
