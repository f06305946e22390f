"""Attention weights of every attention layer in a trained model.

The model is not changed and the user rebuilds nothing. attnkit replays the
model's graph on fresh symbolic inputs with the *same* layer objects (so the
same trained weights), calling each attention layer with
``return_attention_scores=True``, and builds a second Keras model from the
model's inputs to those weights:

- Functional models: ``keras.models.clone_model(model, clone_function=identity,
  call_function=...)``, Keras' public hook for re-calling each layer of a
  functional graph. Nested functional/Sequential models are traced the same way
  and their weights are read through the nested model's own inputs.
- Sequential models: the layers are re-called in order on a fresh input.

Each attention layer is re-called through a thin wrapper layer that owns no
weights and calls it with ``return_attention_scores=True``. The wrapper is
needed because Keras assumes every call of one layer object returns the same
structure as its first call, and the first call returned only the output.
Implicit masks reach the wrapped layer unchanged, because the wrapper passes
the very tensors (which carry them) through.

The extractor model is cached per model, so repeated calls reuse it. Attention
layers hidden inside a custom (subclassed) layer or model are out of reach of
any graph walk; call those layers yourself with ``return_attention_scores=True``.
"""

from __future__ import annotations

import inspect
import weakref

import keras

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FLAG = "return_attention_scores"


def is_attention_layer(layer) -> bool:
    """Whether ``layer.call`` takes ``return_attention_scores``."""
    if isinstance(layer, keras.Model):
        return False
    try:
        return _FLAG in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def _is_graph_model(model) -> bool:
    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")
    )


class _WithScores(keras.layers.Layer):
    """Calls an attention layer (same object, same weights) asking for its weights."""

    def __init__(self, layer, **kwargs):
        super().__init__(name=f"{layer.name}_with_scores", dtype=layer.dtype_policy, **kwargs)
        self.layer = layer
        # The wrapped layer sets its output's mask itself; claiming support keeps
        # Keras from warning that the wrapper drops it.
        self.supports_masking = True

    def call(self, *args, **kwargs):
        return self.layer(*args, **{**kwargs, _FLAG: True})

    def compute_mask(self, *args, **kwargs):
        return None


class _Recorder:
    """Calls layers, collecting attention weights as symbolic tensors."""

    def __init__(self):
        self.maps = {}  # key -> symbolic weights
        self._calls = {}  # id(layer) -> number of calls so far
        # id(layer) -> _WithScores: one per layer, as names must be unique in a model
        self._wrappers = {}

    def _key(self, layer):
        n = self._calls.get(id(layer), 0)
        self._calls[id(layer)] = n + 1
        return layer.name if n == 0 else f"{layer.name}:{n}"

    def __call__(self, layer, *args, **kwargs):
        if _is_graph_model(layer):
            key = self._key(layer)
            inner = _extractor(layer)
            if inner is not None:
                inputs = args[0] if args else kwargs.get("inputs")
                for name, weights in inner(inputs).items():
                    self.maps[f"{key}/{name}"] = weights
            return layer(*args, **kwargs)
        if not is_attention_layer(layer):
            return layer(*args, **kwargs)
        key = self._key(layer)
        if id(layer) not in self._wrappers:
            self._wrappers[id(layer)] = _WithScores(layer)
        outputs = self._wrappers[id(layer)](*args, **kwargs)  # (output, weights)
        self.maps[key] = outputs[-1]
        return outputs if kwargs.get(_FLAG) else outputs[0]


def _trace(model):
    """(symbolic inputs, {name: symbolic weights}) for a built graph model."""
    recorder = _Recorder()
    if isinstance(model, keras.Sequential):
        inputs = [
            keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name) for x in model.inputs
        ]
        x = inputs[0]
        for layer in model.layers:
            x = recorder(layer, x)
        return inputs, recorder.maps
    clone = keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=recorder
    )
    return clone.inputs, recorder.maps


def _extractor(model):
    """A cached model from ``model``'s inputs to its attention weights, or None."""
    try:
        return _CACHE[model]
    except (KeyError, TypeError):
        pass
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            "Expected a built model with known inputs (call it once or give it an "
            f"`Input`). Received: model={model.name!r}"
        )
    inputs, maps = _trace(model)
    extractor = keras.Model(inputs, maps, name=f"{model.name}_attention_maps") if maps else None
    try:
        _CACHE[model] = extractor
    except TypeError:
        pass
    return extractor


def attention_maps(model, inputs, batch_size=None) -> dict:
    """The attention weights of every attention layer in a model, for some inputs.

    Works on functional and Sequential models holding attnkit layers or
    `keras.layers.MultiHeadAttention`, `Attention` and `AdditiveAttention` (any
    layer whose `call` takes `return_attention_scores`), including layers in
    nested functional or Sequential models. The model is used as is: attnkit
    re-calls the same layers (same weights) on the model's graph with
    `return_attention_scores=True` (see the module docstring). Dropout is off
    (inference mode).

    Args:
        model: a built functional or Sequential `keras.Model`.
        inputs: what `model.predict` takes: an array, a list or a dict of arrays.
        batch_size: batch size for the forward pass. Defaults to `None` (32).

    Returns:
        A dict from layer name to a NumPy array of its attention weights, in
        the layer's own layout: e.g. `(B, Tq, Tv)` for `Attention`,
        `(B, H, Tq, Tv)` for `MultiHeadAttention` (with `attention_axes=(1, 2)`
        on images: `(B, H, h, w, h, w)`). A layer called twice gives `"name"`
        and `"name:1"`; a layer inside a nested model `"inner_model/name"`.

    Example:

    >>> import keras, numpy as np, attnkit
    >>> x = keras.Input((5, 8))
    >>> y = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    >>> model = keras.Model(x, y)
    >>> maps = attnkit.attention_maps(model, np.zeros((3, 5, 8), "float32"))
    >>> maps["mha"].shape
    (3, 2, 5, 5)
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model. Received: model={model!r}")
    if not _is_graph_model(model):
        raise ValueError(
            "Expected a functional or Sequential model; a subclassed model's "
            "layers cannot be re-called from outside. Call its attention layers "
            "with `return_attention_scores=True` instead. "
            f"Received: model={type(model).__name__}"
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(
            f"Expected `batch_size` to be a positive integer. Received: batch_size={batch_size!r}"
        )
    extractor = _extractor(model)
    if extractor is None:
        raise ValueError(
            "Expected a model with at least one attention layer (a layer whose `call` "
            f"takes `return_attention_scores`). Received: model={model.name!r}"
        )
    maps = extractor.predict(inputs, batch_size=batch_size, verbose=0)
    return dict(maps)
