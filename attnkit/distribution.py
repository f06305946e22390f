"""Scaling attnkit models out with ``keras.distribution`` (JAX backend).

``layout_map`` builds a ``keras.distribution.LayoutMap`` that shards attention
layers over the mesh's model axis:

- multi-head attention, by heads: query/key/value kernels ``(D, H, Dh)`` ->
  ``(None, model, None)``, their biases ``(H, Dh)`` -> ``(model, None)``, the
  output kernel ``(H, Dh, D_out)`` -> ``(model, None, None)``. Heads never
  straddle devices, so attention itself needs no communication; only the
  output projection's sum over heads does (XLA inserts it). Works for
  ``attnkit.layers.MultiHeadAttention`` and ``keras.layers.MultiHeadAttention``,
  which share weight names.
- additive (Bahdanau) attention, by units: the query and key/memory
  projections ``(D, U)`` -> ``(None, model)`` and the per-unit vectors
  (``v``, the bias) ``(U,)`` -> ``(model,)``; each device scores its share of
  the U units and the sum over units is reduced across the axis. This covers
  ``AdditiveAttention(units=...)`` and every mechanism with Bahdanau's score
  (``BahdanauAttention``, ``MonotonicAttention(score="bahdanau")``,
  ``ForwardAttention``, ``LocationSensitiveAttention``).

Every other variable stays replicated. The layout is looked up when a variable
is created, by its path: build the distributed model with the same layer names
as the model the map was made from (name the attention layers), or pass names.
"""

from __future__ import annotations

import re

import keras

_PROJECTIONS = ("query", "key", "value")


# Weights of additive attention layers: projections (D, U) and per-unit vectors (U,).
_ADDITIVE_KERNELS = ("query_kernel", "key_kernel", "memory_kernel")
_ADDITIVE_VECTORS = ("attention_v", "attention_b", "bias", "scale")


def _is_mha(layer):
    return all(hasattr(layer, f"_{name}_dense") for name in _PROJECTIONS) and hasattr(
        layer, "_output_dense"
    )


def _additive_units(layer):
    """U when ``layer`` scores with Bahdanau's vᵀ tanh(W_q q + W_k k), else None."""
    query = getattr(layer, "query_kernel", None)
    keys = getattr(layer, "key_kernel", None)
    if keys is None:
        keys = getattr(layer, "memory_kernel", None)
    if not isinstance(query, keras.Variable) or not isinstance(keys, keras.Variable):
        return None
    if len(query.shape) != 2 or len(keys.shape) != 2 or query.shape[1] != keys.shape[1]:
        return None
    return query.shape[1]


def _attention_layers(model):
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "`model_or_names` must be a built Keras model/layer or a list of "
            f"layer names. Received: model_or_names={model!r}"
        )
    from attnkit.layers import AdditiveAttention
    from attnkit.layers.attention_mechanism import AttentionMechanism

    layers = []
    for layer in model._flatten_layers(include_self=True):
        unbuilt_additive = not layer.built and (
            isinstance(layer, AttentionMechanism)
            or (isinstance(layer, AdditiveAttention) and layer.units is not None)
        )
        if _is_mha(layer) or unbuilt_additive or _additive_units(layer) is not None:
            layers.append(layer)
    for layer in layers:
        if not layer.built:
            raise ValueError(
                f"Layer {layer.name!r} is not built yet; call the model on data (or "
                "build it) before making its layout map."
            )
    return layers


def _heads_of(layer, projection):
    kernel = getattr(layer, f"_{projection}_dense").kernel
    return kernel.shape[1]


def _split(size, shards, layer, what, mesh, model_axis):
    if size % shards:
        raise ValueError(
            f"Layer {layer.name!r} has {size} {what}, which cannot be split over "
            f"{shards} devices on mesh axis {model_axis!r}. "
            f"Received: mesh.shape={tuple(mesh.shape)}"
        )


def layout_map(model_or_names, mesh, *, model_axis="model"):
    """A ``LayoutMap`` sharding attention layers across ``mesh``'s ``model_axis``.

    Multi-head attention is split by heads, additive (Bahdanau) attention by
    units (see the module docstring for the layouts).

    Args:
        model_or_names: a built model (its multi-head and additive attention
            layers are found automatically, nested ones such as an
            ``AttentionRNNCell``'s mechanism included) or a list of names of
            such layers (matched as path components, e.g. ``"encoder_mha"``).
            With names, an additive layer's ``v`` stored as ``scale``
            (``AdditiveAttention``) stays replicated, since a name alone does
            not tell it from a Luong scale.
        mesh: a ``keras.distribution.DeviceMesh``.
        model_axis: the mesh axis to shard heads over. Defaults to `"model"`.

    Returns:
        A ``keras.distribution.LayoutMap`` for ``keras.distribution.ModelParallel``.

    Raises:
        ValueError: if ``model_or_names`` is neither, ``model_axis`` is not a
            mesh axis, or a layer's number of query or key/value heads (or of
            additive units) is not divisible by that axis' size.
    """
    if model_axis not in mesh.axis_names:
        raise ValueError(
            f"`model_axis` must be one of the mesh axes {tuple(mesh.axis_names)}. "
            f"Received: model_axis={model_axis!r}"
        )
    shards = mesh.shape[list(mesh.axis_names).index(model_axis)]
    lmap = keras.distribution.LayoutMap(mesh)
    if isinstance(model_or_names, (list, tuple, set)):
        for name in model_or_names:
            prefix = rf"(.*/)?{re.escape(name)}"
            _add_mha(lmap, prefix, model_axis)
            for weight in _ADDITIVE_KERNELS:
                lmap[rf"{prefix}/{weight}"] = (None, model_axis)
            for weight in ("attention_v", "attention_b", "bias"):
                lmap[rf"{prefix}/{weight}"] = (model_axis,)
        return lmap
    for layer in _attention_layers(model_or_names):
        if _is_mha(layer):
            for projection in _PROJECTIONS:
                heads = _heads_of(layer, projection)
                _split(heads, shards, layer, f"{projection} heads", mesh, model_axis)
            path = layer._query_dense.kernel.path
            _add_mha(lmap, re.escape(path.rsplit("/", 2)[0]), model_axis)
            continue
        units = _additive_units(layer)
        _split(units, shards, layer, "additive units", mesh, model_axis)
        for name in _ADDITIVE_KERNELS:
            weight = getattr(layer, name, None)
            if isinstance(weight, keras.Variable):
                lmap[re.escape(weight.path)] = (None, model_axis)
        for name in _ADDITIVE_VECTORS:
            weight = getattr(layer, name, None)
            if isinstance(weight, keras.Variable) and tuple(weight.shape) == (units,):
                lmap[re.escape(weight.path)] = (model_axis,)
    return lmap


def _add_mha(lmap, prefix, model_axis):
    for projection in _PROJECTIONS:
        lmap[rf"{prefix}/{projection}/kernel"] = (None, model_axis, None)
        lmap[rf"{prefix}/{projection}/bias"] = (model_axis, None)
    lmap[rf"{prefix}/attention_output/kernel"] = (model_axis, None, None)
