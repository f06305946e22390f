"""Attention weights of every attention layer in a trained model.

The model is not changed and the user rebuilds nothing. attnkit replays the
model's graph on fresh symbolic inputs with the *same* layer objects (so the
same trained weights) and builds a second Keras model from the model's inputs
to the attention weights:

- Functional models: ``keras.models.clone_model(model, clone_function=identity,
  call_function=...)``, Keras' public hook for re-calling each layer of a
  functional graph. Nested functional/Sequential models are traced the same way
  and their weights are read through the nested model's own inputs.
- Sequential models: the layers are re-called in order on a fresh input.

Which layers give weights (the protocol a layer implements to be found):

1. An *attention layer* is a layer whose ``call`` takes
   ``return_attention_scores``; called with it True it returns
   ``(output, weights, *rest)``, and without it ``output`` or
   ``(output, *rest)`` (Keras' ``MultiHeadAttention``, ``Attention``,
   ``AdditiveAttention``, keras-hub's ``CachedMultiHeadAttention`` and
   ``TransformerEncoder``, every attnkit layer with the flag).
2. A *container* is any other layer that holds attention layers: those it
   returns from an ``attention_layers()`` method when it has one (an empty
   list hides its insides), else the attention layers Keras tracks as its
   attributes, searched recursively but not inside an attention layer. Their
   weights are keyed ``"container/inner"``.
3. A ``keras.layers.RNN`` whose cell has ``state_alignment(states)`` (attnkit's
   ``AttentionRNNCell``) gives the alignment of every step, ``(B, Ty, Tv)``.

How: the layer the graph calls (the attention layer itself, or the container)
is re-called through a thin wrapper layer that owns no weights. While the
wrapper runs, each attention layer it covers has its ``call`` replaced on the
instance by one that passes ``return_attention_scores=True``, keeps the
weights and returns what the model asked for; the original ``call`` is put
back before the wrapper returns. The wrapper takes only the call's tensors
(its Python arguments, such as ``use_causal_mask=True``, are fixed when it is
made), since Keras refuses a nested argument that mixes the two; the same
tensor objects (which carry their implicit masks) reach the layer. Layers
that would not materialise the weights (attnkit's ``implementation="chunked"``
or ``"fused"``, Keras' or attnkit's ``flash_attention``) are switched to
their naive path during that call only, which computes the same attention.

The extractor model is cached per model, so repeated calls reuse it. A
subclassed model's ``call`` cannot be replayed; call its attention layers
yourself with ``return_attention_scores=True``.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from typing import Any

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


def exposed_attention_layers(layer) -> list:
    """The attention layers that a container ``layer`` exposes (point 2 of the protocol).

    ``layer.attention_layers()`` when it defines it, else the attention layers
    among the sublayers Keras tracks, found depth first without looking inside
    an attention layer. Empty for an attention layer itself.
    """
    if is_attention_layer(layer):
        return []
    method = getattr(layer, "attention_layers", None)
    if callable(method):
        found = list(method())
        for inner in found:
            if not is_attention_layer(inner):
                raise ValueError(
                    "`attention_layers()` must return layers whose `call` takes "
                    f"`return_attention_scores`. Received: {inner!r} from layer={layer.name!r}"
                )
        return found
    found, seen = [], set()

    def visit(parent):
        for child in getattr(parent, "_layers", []):
            if id(child) in seen:
                continue
            seen.add(id(child))
            if is_attention_layer(child):
                found.append(child)
            elif not _is_graph_model(child):
                visit(child)

    visit(layer)
    return found


def _is_graph_model(model) -> bool:
    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")
    )


def _is_alignment_rnn(layer) -> bool:
    return isinstance(layer, keras.layers.RNN) and callable(
        getattr(layer.cell, "state_alignment", None)
    )


# -- recording an attention layer's weights -------------------------------------


@contextlib.contextmanager
def _weights_visible(layer):
    """Switches ``layer`` to a path that materialises its weights, for one call.

    attnkit's ``implementation="chunked"``/``"fused"`` never form the weights
    and flash attention refuses to return them; the naive path computes the
    same attention and does.
    """
    saved = {}
    if getattr(layer, "_implementation", None) in ("chunked", "fused"):
        saved["_implementation"] = layer._implementation
        layer._implementation = "naive"
    if hasattr(layer, "_flash_attention") and layer._flash_attention is not False:
        saved["_flash_attention"] = layer._flash_attention
        layer._flash_attention = False
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(layer, name, value)


def _recording_call(layer, sink):
    """A ``call`` for ``layer`` that asks for its weights, appends them to ``sink``
    and returns what the caller asked for."""
    original = type(layer).call.__get__(layer)
    signature = inspect.signature(original)

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        asked = bool(bound.arguments.get(_FLAG, False))
        bound.arguments[_FLAG] = True
        with _weights_visible(layer):
            result = original(*bound.args, **bound.kwargs)  # (output, weights, *rest)
        sink.append((layer, result[1]))
        if asked:
            return result
        rest = (result[0], *result[2:])
        return rest[0] if len(rest) == 1 else type(result)(rest)

    return call


@contextlib.contextmanager
def recording(layers):
    """Within the block, calls of ``layers`` record their attention weights.

    Yields a list that receives ``(layer, weights)`` per call, in call order.
    Each layer's ``call`` is replaced on the instance and restored on exit.
    """
    sink, patched = [], []
    try:
        for layer in layers:
            if any(layer is p for p, _ in patched):
                continue
            previous = layer.__dict__.get("call")
            object.__setattr__(layer, "call", _recording_call(layer, sink))
            patched.append((layer, previous))
        yield sink
    finally:
        for layer, previous in reversed(patched):
            if previous is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", previous)


def _is_tensor(x) -> bool:
    return keras.backend.is_keras_tensor(x) or keras.ops.is_tensor(x)


class _Capture(keras.layers.Layer):
    """Calls ``layer`` as the model does, recording the weights of ``targets``.

    Owns no weights. Takes the call's tensors as one flat list; the call's
    other (Python) arguments are fixed here, as Keras refuses a nested call
    argument that mixes tensors and non-tensors. Returns ``(outputs, [weights
    of each recorded call])``; ``recorded`` names the layer of each.
    """

    def __init__(self, layer, targets, args, kwargs, name):
        super().__init__(name=name, dtype=layer.dtype_policy)
        self.layer = layer
        self._targets = list(targets)
        flat = keras.tree.flatten((args, kwargs))
        self._structure = (args, kwargs)
        self._is_tensor = [_is_tensor(x) for x in flat]
        self._static = [None if t else x for x, t in zip(flat, self._is_tensor, strict=True)]
        self.tensors = [x for x, t in zip(flat, self._is_tensor, strict=True) if t]
        self.recorded = []
        # The wrapped layer sets its outputs' masks itself; claiming support
        # keeps Keras from warning that the wrapper drops them. Its inputs are
        # passed on as they are (converting them would drop their masks).
        self.supports_masking = True
        self._convert_input_args = False

    def _rebuild(self, tensors):
        tensors = iter(tensors)
        flat = [
            next(tensors) if t else s for t, s in zip(self._is_tensor, self._static, strict=True)
        ]
        return keras.tree.pack_sequence_as(self._structure, flat)

    def compute_output_spec(self, tensors):
        # An attention layer with its own output spec answers for itself: no
        # symbolic run of its call (JAX's symbolic batch size would reach it).
        layer = self.layer
        own = type(layer).compute_output_spec is not keras.layers.Layer.compute_output_spec
        if self._targets != [layer] or not own:
            return super().compute_output_spec(tensors)
        args, kwargs = self._rebuild(tensors)
        asked = bool(kwargs.get(_FLAG, False))
        result = layer.compute_output_spec(*args, **{**kwargs, _FLAG: True})
        self.recorded = [layer]
        if asked:
            return result, [result[1]]
        rest = (result[0], *result[2:])
        return (rest[0] if len(rest) == 1 else type(result)(rest)), [result[1]]

    def call(self, tensors):
        args, kwargs = self._rebuild(tensors)
        with recording(self._targets) as sink:
            outputs = self.layer(*args, **kwargs)
        self.recorded = [layer for layer, _ in sink]
        return outputs, [weights for _, weights in sink]

    def compute_mask(self, *args, **kwargs):
        return None


# -- the recurrent alignment history ------------------------------------------


class _AlignmentCell(keras.layers.Layer):
    """Runs an attention cell (same object) and outputs its alignment each step.

    Its state is ``[alignment, *cell states]``: the first state is the last
    output, which Keras' JAX backend repeats on masked steps.
    """

    def __init__(self, cell, alignment_size, **kwargs):
        super().__init__(dtype=cell.dtype_policy, **kwargs)
        self.cell = cell
        self.alignment_size = alignment_size

    @property
    def state_size(self):
        size = self.cell.state_size
        return [self.alignment_size, *(size if isinstance(size, (list, tuple)) else [size])]

    @property
    def output_size(self):
        return self.alignment_size

    def build(self, input_shape):
        if not self.cell.built:
            self.cell.build(input_shape)

    def call(self, inputs, states, training=None):
        _, new_states = self.cell(inputs, list(states[1:]), training=training)
        alignment = self.cell.state_alignment(new_states)  # (B, Tv)
        return alignment, [alignment, *new_states]


def _alignment_history(rnn, args, kwargs):
    """The (B, Ty, Tv) alignments of a ``keras.layers.RNN`` over an alignment cell."""
    bound = inspect.signature(type(rnn).call).bind(rnn, *args, **kwargs)
    sequences = bound.arguments["sequences"]
    initial_state = bound.arguments.get("initial_state")
    if initial_state is None:
        raise ValueError(
            "An RNN over an attention cell needs its `initial_state` (it carries the "
            f"memory) to give its alignments. Received: layer={rnn.name!r} without one"
        )
    initial_state = (
        list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
    )
    first = rnn.cell.state_alignment(initial_state)  # (B, Tv)
    history = keras.layers.RNN(
        _AlignmentCell(rnn.cell, first.shape[-1]),
        return_sequences=True,
        go_backwards=rnn.go_backwards,
        unroll=rnn.unroll,
        zero_output_for_mask=rnn.zero_output_for_mask,
        name=f"{rnn.name}_alignment_history",
    )
    extra = {k: bound.arguments[k] for k in ("mask", "training") if k in bound.arguments}
    return history(sequences, initial_state=[first, *initial_state], **extra)  # (B, Ty, Tv)


# -- tracing a graph model -------------------------------------------------------


class _Recorder:
    """Calls layers, collecting attention weights as symbolic tensors."""

    def __init__(self):
        self.maps = {}  # key -> symbolic weights
        self._calls = {}  # id(layer) -> number of calls so far
        self._wrappers = 0  # wrapper names must be unique in the extractor

    def _key(self, layer, calls=None):
        calls = self._calls if calls is None else calls
        n = calls.get(id(layer), 0)
        calls[id(layer)] = n + 1
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
        if _is_alignment_rnn(layer):
            self.maps[self._key(layer)] = _alignment_history(layer, args, kwargs)
            return layer(*args, **kwargs)
        direct = is_attention_layer(layer)
        targets = [layer] if direct else exposed_attention_layers(layer)
        if not targets:
            return layer(*args, **kwargs)
        key = self._key(layer)
        self._wrappers += 1
        capture = _Capture(
            layer, targets, args, kwargs, name=f"{layer.name}_attention_maps_{self._wrappers}"
        )
        outputs, weights = capture(list(capture.tensors))
        if direct:
            names = [key]
        else:
            inner_calls = {}
            names = [f"{key}/{self._key(inner, inner_calls)}" for inner in capture.recorded]
        for name, w in zip(names, weights, strict=True):
            self.maps[name] = w
        return outputs


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
    extractor = None
    if maps:
        extractor = keras.Model(inputs, maps, name=f"{model.name}_attention_maps")
        extractor.map_names = tuple(maps)  # call order (Keras may sort dict outputs)
    try:
        _CACHE[model] = extractor
    except TypeError:
        pass
    return extractor


def attention_maps(
    model: keras.Model, inputs: Any, batch_size: int | None = None
) -> dict[str, Any]:
    """The attention weights of every attention layer in a model, for some inputs.

    Works on functional and Sequential models holding attnkit layers or
    `keras.layers.MultiHeadAttention`, `Attention` and `AdditiveAttention` (any
    layer whose `call` takes `return_attention_scores`), including layers in
    nested functional or Sequential models, attention layers inside custom
    layers (found through Keras' layer tracking or the layer's
    `attention_layers()` method), keras-hub's `TransformerEncoder`,
    `TransformerDecoder` and `CachedMultiHeadAttention`, and
    `keras.layers.RNN(AttentionRNNCell(...))` (the alignment of every step).
    The model is used as is: attnkit re-calls the same layers (same weights) on
    the model's graph with `return_attention_scores=True` (see the module
    docstring). Layers set to `implementation="chunked"` or `"fused"` or to
    flash attention give their weights through their naive path. Dropout is
    off (inference mode).

    Args:
        model: a built functional or Sequential `keras.Model`.
        inputs: what `model.predict` takes: an array, a list or a dict of arrays.
        batch_size: batch size for the forward pass. Defaults to `None` (32).

    Returns:
        A dict from layer name to a NumPy array of its attention weights, in
        the layer's own layout: e.g. `(B, Tq, Tv)` for `Attention`,
        `(B, H, Tq, Tv)` for `MultiHeadAttention` (with `attention_axes=(1, 2)`
        on images: `(B, H, h, w, h, w)`), `(B, Ty, Tv)` for an RNN over an
        attention cell. A layer called twice gives `"name"` and `"name:1"`; a
        layer inside a nested model `"inner_model/name"`, one inside a custom
        layer `"custom_layer/name"`. Entries are in the order the layers are
        called.

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
    return {name: maps[name] for name in extractor.map_names}
