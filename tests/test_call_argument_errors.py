"""Every call argument of every layer refuses a wrong shape with a ValueError
naming that argument (issue 16, item 4), driven by the layer registry.

For the Keras-named layers the same call to Keras 3.15 mostly does not raise a
ValueError: it fails inside the backend (a RuntimeError on torch, a TypeError
or ValueError on JAX), silently broadcasts a (B, 1, T) mask, or (its
MultiHeadAttention's `query_mask`) ignores the mask; docs/KERAS_DIFFERENCES.md
lists this. The Keras outcome of every case is pinned on torch below.
"""

import keras
import numpy as np
import pytest

from attnkit.testing.contract import call_layer
from attnkit.testing.registry import EXAMPLES, example_data, public_layers

KERAS_TWINS = {
    "Attention": lambda: keras.layers.Attention(),
    "AdditiveAttention": lambda: keras.layers.AdditiveAttention(),
    "MultiHeadAttention": lambda: keras.layers.MultiHeadAttention(num_heads=4, key_dim=4),
    "GroupedQueryAttention": lambda: keras.layers.GroupQueryAttention(4, 4, 2),
}


# What keras.layers 3.15.1 does with each case on torch ("accepted": no error).
KERAS_ON_TORCH = {
    "AdditiveAttention-mask[0]-0": "RuntimeError",
    "AdditiveAttention-mask[0]-1": "RuntimeError",
    "AdditiveAttention-mask[1]-2": "RuntimeError",
    "AdditiveAttention-mask[1]-3": "RuntimeError",
    "Attention-mask[0]-0": "RuntimeError",
    "Attention-mask[0]-1": "RuntimeError",
    "Attention-mask[1]-2": "RuntimeError",
    "Attention-mask[1]-3": "RuntimeError",
    "GroupedQueryAttention-query_mask-0": "RuntimeError",
    "GroupedQueryAttention-query_mask-1": "accepted",
    "GroupedQueryAttention-value_mask-2": "RuntimeError",
    "GroupedQueryAttention-value_mask-3": "accepted",
    "GroupedQueryAttention-key_mask-4": "RuntimeError",
    "GroupedQueryAttention-key_mask-5": "accepted",
    "GroupedQueryAttention-attention_mask-6": "RuntimeError",
    "GroupedQueryAttention-attention_mask-7": "RuntimeError",
    "GroupedQueryAttention-attention_mask-8": "ValueError",
    "MultiHeadAttention-query_mask-0": "accepted",
    "MultiHeadAttention-query_mask-1": "accepted",
    "MultiHeadAttention-value_mask-2": "RuntimeError",
    "MultiHeadAttention-value_mask-3": "accepted",
    "MultiHeadAttention-key_mask-4": "RuntimeError",
    "MultiHeadAttention-key_mask-5": "accepted",
    "MultiHeadAttention-attention_mask-6": "RuntimeError",
    "MultiHeadAttention-attention_mask-7": "RuntimeError",
    "MultiHeadAttention-attention_mask-8": "ValueError",
}


def _bad_masks(name):
    """(call kwargs, argument name) pairs: one wrongly shaped mask each."""
    example = EXAMPLES[name]
    shapes = example.input_shapes
    cases = []
    if example.call_style == "list":
        for i, shape in enumerate(shapes):
            for bad in ((shape[0], shape[1] + 1), (shape[0], shape[1], 1)):
                mask = [None] * len(shapes)
                mask[i] = np.ones(bad, bool)
                cases.append(({"mask": mask}, f"mask[{i}]"))
    elif example.call_style == "qv":
        (b, tq, _), (_, tv, _) = shapes[0], shapes[1]
        for arg, length in (("query_mask", tq), ("value_mask", tv), ("key_mask", tv)):
            cases.append(({arg: np.ones((b, length + 1), bool)}, arg))
            cases.append(({arg: np.ones((b, 1, length), bool)}, arg))
        for bad in ((b, tq, tq), (b, 3, tq, tv), (tv,)):
            cases.append(({"attention_mask": np.ones(bad, bool)}, "attention_mask"))
    elif example.call_style == "single":
        (b, t, _) = shapes[0]
        cases.append(({"mask": np.ones((b, t + 1), bool)}, "mask"))
        cases.append(({"mask": np.ones((b, t, 1), bool)}, "mask"))
    return cases


GRID = [
    pytest.param(name, kwargs, arg, f"{name}-{arg}-{i}", id=f"{name}-{arg}-{i}")
    for name in sorted(EXAMPLES)
    for i, (kwargs, arg) in enumerate(_bad_masks(name))
]


def test_every_layer_but_the_rnn_cell_is_covered():
    covered = {p.values[0] for p in GRID}
    assert covered == set(public_layers()) - {"AttentionRNNCell"}


@pytest.mark.parametrize("name,kwargs,arg,case", GRID)
def test_a_wrongly_shaped_mask_is_a_value_error_naming_it(name, kwargs, arg, case):
    example = EXAMPLES[name]
    layer = public_layers()[name](**example.constructor_kwargs())
    data = example_data(name)
    call_layer(layer, data, example.call_style)  # builds
    with pytest.raises(ValueError, match=rf"`{_escape(arg)}` must .*Received: {_escape(arg)}"):
        call_layer(layer, data, example.call_style, kwargs)
    if name in KERAS_TWINS and keras.backend.backend() == "torch":
        theirs = KERAS_TWINS[name]()
        call_layer(theirs, data, example.call_style)
        try:
            call_layer(theirs, data, example.call_style, kwargs)
            outcome = "accepted"
        except Exception as error:  # noqa: BLE001 - the type is what is pinned
            outcome = type(error).__name__
        assert outcome == KERAS_ON_TORCH[case]


def _escape(arg):
    return arg.replace("[", r"\[").replace("]", r"\]")


@pytest.mark.parametrize("name", sorted(n for n, e in EXAMPLES.items() if e.call_style == "qv"))
def test_a_query_of_the_wrong_rank_is_a_value_error_naming_it(name):
    example = EXAMPLES[name]
    layer = public_layers()[name](**example.constructor_kwargs())
    query, value = example_data(name)
    with pytest.raises(ValueError, match=r"`query`.*Received: query_shape="):
        layer(query[0], value)
