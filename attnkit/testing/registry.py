"""One small, deterministic example per public layer: the suite's single registry.

Every public layer class exported by ``attnkit.layers`` has an entry in
``EXAMPLES`` (a test fails for a layer without one, so a new layer cannot be
forgotten). An entry states how the layer is built and called and what it must
give: the output and attention-scores shapes, the call flag that returns the
scores, the input whose Keras mask it passes on, and how many trainable
weights, non-trainable weights and seed generators it holds once built. The
same entry drives

- the layer contract: ``run_layer_contract(**contract_arguments(name))``;
- portability and quiet-layer checks: ``build_model(name, layer_cls)`` returns a
  functional model around the layer and its input data;
- the attention-map checks: ``attnkit.attention_maps`` finds exactly the
  entries with a scores flag and returns ``scores_shape`` for them.

Call styles are those of ``attnkit.testing.contract.CALL_STYLES``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping

import keras
import numpy as np

from attnkit.testing.contract import call_layer, check_call_style


@dataclasses.dataclass(frozen=True)
class LayerExample:
    """How one layer is built and called, and what it must give.

    Attributes:
        init_kwargs: constructor arguments (plain data).
        input_shapes: full input shapes, batch included.
        call_style: one of ``attnkit.testing.contract.CALL_STYLES``.
        output_shape: the output's shape on ``input_shapes``.
        trainable_weights: number of trainable weights once built.
        non_trainable_weights: number of non-trainable weights once built.
        seed_generators: number of seed generators, sublayers' included.
        scores_kwarg: the call flag that also returns the attention weights,
            or None when the layer has none.
        scores_shape: the attention weights' shape (None without scores).
        mask_input: index of the input whose Keras mask the contract sets, or
            None (an RNN cell gets its masks through ``keras.layers.RNN``).
        passes_query_mask: the output carries the query's mask (False: the
            layer consumes the mask, as pooling over time does).
        sublayers: function returning the constructor arguments that are
            layers (made fresh for every instance), or None.
        call_kwargs: extra call arguments.
    """

    init_kwargs: Mapping
    input_shapes: tuple
    call_style: str
    output_shape: tuple
    trainable_weights: int
    non_trainable_weights: int = 0
    seed_generators: int = 0
    scores_kwarg: str | None = "return_attention_scores"
    scores_shape: tuple | None = None
    mask_input: int | None = 0
    passes_query_mask: bool = True
    sublayers: Callable[[], dict] | None = None
    call_kwargs: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check_call_style(self.call_style)
        if (self.scores_kwarg is None) != (self.scores_shape is None):
            raise ValueError(
                "`scores_shape` is given exactly when `scores_kwarg` is. "
                f"Received: scores_kwarg={self.scores_kwarg!r}, scores_shape={self.scores_shape!r}"
            )

    def constructor_kwargs(self) -> dict:
        """The constructor arguments, with fresh sublayers."""
        made = self.sublayers() if self.sublayers is not None else {}
        return {**made, **self.init_kwargs}


def _recurrent_decoder():
    from attnkit.layers import BahdanauAttention

    # The order matters: it fixes the layers' automatic names and weight seeds.
    return {"cell": keras.layers.LSTMCell(8), "mechanism": BahdanauAttention(6)}


_QV = ((2, 5, 8), (2, 7, 8))  # query (B, Tq, D), value (B, Tv, D)

EXAMPLES: dict[str, LayerExample] = {
    "Attention": LayerExample(
        {"score_mode": "general"}, _QV, "list", (2, 5, 8), 1, scores_shape=(2, 5, 7)
    ),
    # query_kernel, key_kernel, bias, scale (Bahdanau's vᵀ).
    "AdditiveAttention": LayerExample(
        {"units": 6}, _QV, "list", (2, 5, 8), 4, scores_shape=(2, 5, 7)
    ),
    # Kernel and bias of the query, key, value and output projections.
    # MultiHeadAttention's eight weights under Keras' GroupQueryAttention names.
    "GroupedQueryAttention": LayerExample(
        {"head_dim": 4, "num_query_heads": 4, "num_key_value_heads": 2},
        _QV,
        "qv",
        (2, 5, 8),
        8,
        scores_shape=(2, 4, 5, 7),
    ),
    "MultiHeadAttention": LayerExample(
        {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2},
        _QV,
        "qv",
        (2, 5, 8),
        8,
        scores_shape=(2, 4, 5, 7),
    ),
    # W, b, u_w; the time axis is pooled away, and with it the mask.
    "AttentionPooling": LayerExample(
        {"units": 6},
        ((2, 7, 8),),
        "single",
        (2, 8),
        3,
        scores_shape=(2, 7),
        passes_query_mask=False,
    ),
    # The general score's kernel, W_p and v_p.
    "LocalAttention": LayerExample(
        {"window": 2, "mode": "local-p"}, _QV, "list", (2, 5, 8), 3, scores_shape=(2, 5, 7)
    ),
    # Dot scores and top-k: no weights; no noise outside the Gumbel method.
    "HardAttention": LayerExample(
        {"method": "topk", "k": 2}, _QV, "list", (2, 5, 8), 0, scores_shape=(2, 5, 7)
    ),
    "LuongAttention": LayerExample(
        {"score_mode": "general"}, _QV, "list", (2, 5, 8), 1, scores_shape=(2, 5, 7)
    ),
    # query_kernel, memory_kernel, attention_v.
    "BahdanauAttention": LayerExample(
        {"units": 6}, _QV, "list", (2, 5, 8), 3, scores_shape=(2, 5, 7)
    ),
    "MonotonicAttention": LayerExample(
        {"units": 6, "mode": "recursive"}, _QV, "list", (2, 5, 8), 6, scores_shape=(2, 5, 7)
    ),
    # Bahdanau's three weights plus the transition agent's kernel and bias.
    "ForwardAttention": LayerExample(
        {"units": 6}, _QV, "list", (2, 5, 8), 5, scores_shape=(2, 5, 7)
    ),
    # Bahdanau's three weights plus the location filters and their kernel.
    "LocationSensitiveAttention": LayerExample(
        {"units": 6, "filters": 4, "kernel_size": 3},
        _QV,
        "list",
        (2, 5, 8),
        5,
        scores_shape=(2, 5, 7),
    ),
    # Position layers: no weights, no scores; the mask passes on.
    "RotaryEmbedding": LayerExample(
        {"rotary_dim": 4, "scaling": "yarn", "scaling_factor": 2.0, "original_max_position": 4},
        ((2, 5, 8),),
        "single",
        (2, 5, 8),
        0,
        scores_kwarg=None,
    ),
    "SinusoidalPositionEncoding": LayerExample(
        {"max_wavelength": 100.0}, ((2, 5, 8),), "single", (2, 5, 8), 0, scores_kwarg=None
    ),
    # Inputs: decoder targets (B, Ty, F) and encoder memory (B, Tx, D). The
    # LSTM's kernel, recurrent kernel and bias plus Bahdanau's three weights;
    # the LSTMCell owns a seed generator (for its dropout) even at rate 0.
    "AttentionRNNCell": LayerExample(
        {},
        ((2, 4, 3), (2, 7, 8)),
        "rnn_cell",
        (2, 4, 8),
        6,
        seed_generators=1,
        scores_kwarg=None,
        mask_input=None,
        sublayers=_recurrent_decoder,
    ),
}


def public_layers() -> dict:
    """``{name: class}`` of every public layer in ``attnkit.layers``, under its class
    name (an alias such as ``GroupQueryAttention``, Keras' spelling of
    ``GroupedQueryAttention``, is the same class and has no entry of its own)."""
    import attnkit.layers

    return {
        name: obj
        for name, obj in vars(attnkit.layers).items()
        if inspect.isclass(obj)
        and issubclass(obj, keras.layers.Layer)
        and not name.startswith("_")
        and name == obj.__name__
    }


def example_data(name, seed=0) -> list:
    """The example's inputs: standard normal float32 arrays, one per input shape."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in EXAMPLES[name].input_shapes]


def build_model(name, layer_cls):
    """``(keras.Model, data)``: a functional model around ``layer_cls`` as ``EXAMPLES[name]``."""
    example = EXAMPLES[name]
    inputs = [keras.Input(shape=s[1:]) for s in example.input_shapes]
    layer = layer_cls(**example.constructor_kwargs())
    out = call_layer(layer, inputs, example.call_style, example.call_kwargs)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], out), example_data(name)


def find_layer(model, layer_cls):
    """The one instance of ``layer_cls`` in a model from ``build_model`` (a cell: its RNN's)."""
    found = [layer for layer in model.layers if isinstance(layer, layer_cls)]
    found += [
        layer.cell
        for layer in model.layers
        if isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, layer_cls)
    ]
    if len(found) != 1:
        raise ValueError(
            f"Expected one {layer_cls.__name__} in the model. Received: {len(found)} of them"
        )
    return found[0]


def contract_arguments(name, layer_cls=None) -> dict:
    """Keyword arguments of ``run_layer_contract`` for ``EXAMPLES[name]``."""
    example = EXAMPLES[name]
    layer_cls = public_layers()[name] if layer_cls is None else layer_cls
    return {
        "layer_cls": layer_cls,
        "init_kwargs": example.constructor_kwargs,
        "input_shapes": list(example.input_shapes),
        "call_style": example.call_style,
        "call_kwargs": dict(example.call_kwargs),
        "expected_output_shape": example.output_shape,
        "scores_kwarg": example.scores_kwarg,
        "expected_scores_shape": example.scores_shape,
        "mask_input": example.mask_input,
        "expected_mask": None if example.passes_query_mask else (lambda masks: None),
        "expected_num_trainable_weights": example.trainable_weights,
        "expected_num_non_trainable_weights": example.non_trainable_weights,
        "expected_num_seed_generators": example.seed_generators,
    }
