"""Scaling attnkit models out with ``keras.distribution`` (JAX backend).

``layout_map`` builds a ``keras.distribution.LayoutMap`` that shards every
multi-head attention layer by heads over the mesh's model axis:

- query/key/value kernels ``(D, H, Dh)`` -> ``(None, model, None)``;
  their biases ``(H, Dh)`` -> ``(model, None)``;
- the output kernel ``(H, Dh, D_out)`` -> ``(model, None, None)``.

Heads never straddle devices, so attention itself needs no communication; only
the output projection's sum over heads does (XLA inserts it). Every other
variable stays replicated. Works for ``attnkit.layers.MultiHeadAttention`` and
``keras.layers.MultiHeadAttention``, which share weight names.
"""

from __future__ import annotations

import re

import keras

_PROJECTIONS = ("query", "key", "value")


def _is_mha(layer):
    return all(hasattr(layer, f"_{name}_dense") for name in _PROJECTIONS) and hasattr(
        layer, "_output_dense"
    )


def _mha_layers(model):
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "`model_or_names` must be a built Keras model/layer or a list of "
            f"layer names. Received: model_or_names={model!r}"
        )
    layers = [layer for layer in model._flatten_layers(include_self=True) if _is_mha(layer)]
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


def layout_map(model_or_names, mesh, *, model_axis="model"):
    """A ``LayoutMap`` sharding attention heads across ``mesh``'s ``model_axis``.

    Args:
        model_or_names: a built model (its multi-head attention layers are
            found automatically) or an iterable of layer names (matched as path
            components, e.g. ``"encoder_mha"``).
        mesh: a ``keras.distribution.DeviceMesh``.
        model_axis: the mesh axis to shard heads over. Defaults to `"model"`.

    Returns:
        A ``keras.distribution.LayoutMap`` for ``keras.distribution.ModelParallel``.

    Raises:
        ValueError: if ``model_axis`` is not a mesh axis, or a layer's number of
            query or key/value heads is not divisible by that axis' size (the
            heads could not be split evenly).
    """
    if model_axis not in mesh.axis_names:
        raise ValueError(
            f"`model_axis` must be one of the mesh axes {tuple(mesh.axis_names)}. "
            f"Received: model_axis={model_axis!r}"
        )
    shards = mesh.shape[list(mesh.axis_names).index(model_axis)]
    lmap = keras.distribution.LayoutMap(mesh)
    if isinstance(model_or_names, (list, tuple, set)):
        prefixes = [rf"(.*/)?{re.escape(name)}" for name in model_or_names]
    else:
        prefixes = []
        for layer in _mha_layers(model_or_names):
            for projection in _PROJECTIONS:
                heads = _heads_of(layer, projection)
                if heads % shards:
                    raise ValueError(
                        f"Layer {layer.name!r} has {heads} {projection} heads, which "
                        f"cannot be split over {shards} devices on mesh axis "
                        f"{model_axis!r}. Received: mesh.shape={tuple(mesh.shape)}"
                    )
            path = layer._query_dense.kernel.path
            prefixes.append(re.escape(path.rsplit("/", 2)[0]))
    for prefix in prefixes:
        for projection in _PROJECTIONS:
            lmap[rf"{prefix}/{projection}/kernel"] = (None, model_axis, None)
            lmap[rf"{prefix}/{projection}/bias"] = (model_axis, None)
        lmap[rf"{prefix}/attention_output/kernel"] = (model_axis, None, None)
    return lmap
