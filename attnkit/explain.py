"""Explanations of a model's attention beyond the raw weights.

Pure functions over maps (the output of `attnkit.attention_maps`, or a list of
per-layer weights), in float64 NumPy:

- `rollout`: attention rollout (Abnar & Zuidema 2020);
- `flow`: attention flow, a max-flow per (output token, input token) pair in
  the layered graph of the residual-added attention (Abnar & Zuidema 2020);
- `gradient_rollout`: gradient-weighted relevance (Chefer, Gur, Wolf 2021)
  from weights and their gradients.

And the gradient ones over a model, on every backend:

- `attention_gradients`: each attention layer's weights A and ∂y/∂A for a
  target output y;
- `gradient_weighted_attention`: `gradient_rollout` of those;
- `head_importance`: per-head importance by masking a head (Michel, Levy,
  Neubig 2019): the change of the loss when that head's output is zeroed, or
  their gradient proxy.

Self-attention maps only for rollout, flow and relevance: every layer's weights
are (B, H, T, T) or (B, T, T) (one head) over the same T tokens. See
docs/EXPLAIN.md for the equations.

References:
    - Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers",
      https://arxiv.org/abs/2005.00928
    - Chefer, Gur, Wolf 2021, "Generic Attention-model Explainability for
      Interpreting Bi-Modal and Encoder-Decoder Transformers",
      https://arxiv.org/abs/2103.15679
    - Michel, Levy, Neubig 2019, "Are Sixteen Heads Really Better than One?",
      https://arxiv.org/abs/1905.10650
"""

from __future__ import annotations

import contextlib
from collections import deque

import keras
import numpy as np
from keras import ops

from attnkit import _checks
from attnkit.maps import is_attention_layer, recording

HEAD_FUSIONS = ("mean", "max", "min")


# -- pure functions over maps ---------------------------------------------------------


def _layer_weights(maps, layers=None) -> list:
    """The maps as a list of float64 (B, H, T, T) arrays, in order."""
    if isinstance(maps, dict):
        names = list(maps) if layers is None else list(layers)
        for name in names:
            if name not in maps:
                raise ValueError(
                    f"`layers` must name entries of `maps` ({list(maps)}). "
                    f"Received: layers={layers!r}"
                )
        arrays = [maps[name] for name in names]
    else:
        if layers is not None:
            raise ValueError(
                f"`layers` selects entries of a dict of maps. Received: layers={layers!r}"
            )
        names, arrays = list(range(len(maps))), list(maps)
    if not arrays:
        raise ValueError(f"`maps` must hold at least one layer's weights. Received: maps={maps!r}")
    out: list[np.ndarray] = []  # (B, H, T, T) per layer
    for name, w in zip(names, arrays, strict=True):
        w = np.asarray(w, dtype=np.float64)
        if w.ndim not in (3, 4) or w.shape[-1] != w.shape[-2]:
            raise ValueError(
                "`maps` must hold self-attention weights (B, H, T, T) or (B, T, T). "
                f"Received: maps[{name!r}].shape={w.shape}"
            )
        if w.ndim == 3:
            w = w[:, None]  # one head: (B, 1, T, T)
        if out and (w.shape[0], w.shape[-1]) != (out[0].shape[0], out[0].shape[-1]):
            raise ValueError(
                "Every layer of `maps` must have the same batch and tokens "
                f"(B, T) = {(out[0].shape[0], out[0].shape[-1])}. "
                f"Received: maps[{name!r}].shape={w.shape}"
            )
        out.append(w)
    return out


def fuse_heads(weights, head_fusion="mean"):
    """(B, H, T, T) -> (B, T, T): the heads' mean (Abnar & Zuidema), max or min."""
    _checks.one_of(head_fusion, "head_fusion", HEAD_FUSIONS)
    return {"mean": np.mean, "max": np.max, "min": np.min}[head_fusion](weights, axis=1)


def residual_attention(weights, residual_weight=0.5):
    """Ã = (1 − r)·A + r·I with rows renormalised to sum to 1; (B, T, T) -> (B, T, T).

    r = 0.5 is Abnar & Zuidema's term for the residual connection. A row that
    sums to 0 (a fully masked query with r = 0) stays 0.
    """
    r = _checks.number(residual_weight, "residual_weight")
    if not 0.0 <= r <= 1.0:
        raise ValueError(
            f"`residual_weight` must be in [0, 1]. Received: residual_weight={residual_weight!r}"
        )
    t = weights.shape[-1]
    mixed = (1.0 - r) * weights + r * np.eye(t)  # (B, T, T)
    total = mixed.sum(-1, keepdims=True)
    return np.divide(mixed, total, out=np.zeros_like(mixed), where=total > 0)


def _augmented(maps, head_fusion, residual_weight, layers):
    return [
        residual_attention(fuse_heads(w, head_fusion), residual_weight)
        for w in _layer_weights(maps, layers)
    ]


def rollout(maps, head_fusion="mean", residual_weight=0.5, layers=None):
    """Attention rollout (Abnar & Zuidema 2020): Ã_L · … · Ã_1.

    Each layer's heads are fused (`head_fusion`: `"mean"` as in the paper,
    `"max"` or `"min"`), then mixed with the identity for the residual
    connection and renormalised (`residual_attention`); the product of the
    layers, first layer rightmost, says how much each top-layer token draws
    from each input token.

    Args:
        maps: a dict from `attnkit.attention_maps` (in call order, the first
            layer first) or a list of arrays, each (B, H, T, T) or (B, T, T).
        head_fusion: `"mean"`, `"max"` or `"min"` over heads. Defaults to `"mean"`.
        residual_weight: r in Ã = (1 − r)·A + r·I. Defaults to `0.5`.
        layers: the names of `maps` to use, in order. Defaults to `None` (all).

    Returns:
        (B, T, T) float64: row i, token i of the last layer; column j, input
        token j. Rows sum to 1.
    """
    result = None
    for a in _augmented(maps, head_fusion, residual_weight, layers):
        result = a if result is None else a @ result  # (B, T, T)
    return result


def flow(maps, head_fusion="mean", residual_weight=0.5, layers=None):
    """Attention flow (Abnar & Zuidema 2020): max-flow values in the attention graph.

    Nodes are the tokens of every layer, 0 (the input) to L; token a of layer
    l has an edge to token c of layer l − 1 with capacity Ã_l[a, c] (the
    head-fused, residual-mixed weights of `rollout`). The value for (i, j)
    is the maximum flow from token i of layer L to input token j. Exact but
    costly: T² max-flows per example, each on (L + 1)·T nodes (Dinic's
    algorithm), so keep T small (tens of tokens).

    Args: as `rollout`.

    Returns:
        (B, T, T) float64 flow values in [0, 1].
    """
    augmented = _augmented(maps, head_fusion, residual_weight, layers)
    batch, t = augmented[0].shape[0], augmented[0].shape[-1]
    out = np.zeros((batch, t, t))
    for b in range(batch):
        graph = [a[b] for a in augmented]
        for i in range(t):
            for j in range(t):
                out[b, i, j] = _layered_max_flow(graph, i, j)
    return out


def _layered_max_flow(capacities, source, sink, eps=1e-12):
    """Max flow from token ``source`` of the top layer to token ``sink`` of layer 0.

    ``capacities[l - 1][a, c]``: the edge from token a of layer l to token c of
    layer l − 1. Dinic's algorithm on adjacency lists with paired reverse edges.
    """
    t, n_layers = capacities[0].shape[0], len(capacities)
    node = lambda layer, token: layer * t + token  # noqa: E731
    n = (n_layers + 1) * t
    head, cap, to = [[] for _ in range(n)], [], []
    for layer, c in enumerate(capacities, start=1):
        for a, row in enumerate(c):
            for b, value in enumerate(row):
                if value > eps:
                    u, v = node(layer, a), node(layer - 1, b)
                    head[u].append(len(to))
                    to.append(v)
                    cap.append(float(value))
                    head[v].append(len(to))
                    to.append(u)
                    cap.append(0.0)
    s, goal = node(n_layers, source), node(0, sink)
    total = 0.0
    while True:
        level = [-1] * n
        level[s] = 0
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for e in head[u]:
                if cap[e] > eps and level[to[e]] < 0:
                    level[to[e]] = level[u] + 1
                    queue.append(to[e])
        if level[goal] < 0:
            return total
        cursor = [0] * n

        def push(u, limit, level=level, cursor=cursor):
            if u == goal:
                return limit
            while cursor[u] < len(head[u]):
                e = head[u][cursor[u]]
                v = to[e]
                if cap[e] > eps and level[v] == level[u] + 1:
                    sent = push(v, min(limit, cap[e]))
                    if sent > eps:
                        cap[e] -= sent
                        cap[e ^ 1] += sent
                        return sent
                cursor[u] += 1
            return 0.0

        while True:
            sent = push(s, float("inf"))
            if sent <= eps:
                break
            total += sent


def gradient_rollout(weights, gradients):
    """Gradient-weighted relevance (Chefer, Gur, Wolf 2021), self-attention rule.

    R = I; for each layer l in order, Ā_l = mean_h((∇A_l ⊙ A_l)⁺) and
    R ← R + Ā_l · R.

    Args:
        weights: per-layer attention weights, as `rollout`'s `maps` (a dict
            or a list), each (B, H, T, T) or (B, T, T).
        gradients: ∂y/∂A of the same layers and shapes (the same keys).

    Returns:
        (B, T, T) float64 relevance: row i, token i; column j, input token j.
    """
    if isinstance(weights, dict) != isinstance(gradients, dict) or (
        isinstance(weights, dict) and list(weights) != list(gradients)
    ):
        raise ValueError(
            "`gradients` must hold the same layers as `weights`. "
            f"Received: gradients of {_describe(gradients)} for weights of {_describe(weights)}"
        )
    a_list, g_list = _layer_weights(weights), _layer_weights(gradients)
    for i, (a, g) in enumerate(zip(a_list, g_list, strict=False)):
        if a.shape != g.shape:
            raise ValueError(
                "`gradients` must have the shapes of `weights`. "
                f"Received: gradients shape {g.shape} for weights shape {a.shape} (layer {i})"
            )
    if len(a_list) != len(g_list):
        raise ValueError(
            "`gradients` must hold the same layers as `weights`. "
            f"Received: {len(g_list)} gradients for {len(a_list)} weights"
        )
    batch, t = a_list[0].shape[0], a_list[0].shape[-1]
    relevance = np.broadcast_to(np.eye(t), (batch, t, t)).copy()
    for a, g in zip(a_list, g_list, strict=True):
        cam = np.maximum(g * a, 0.0).mean(axis=1)  # (B, T, T)
        relevance = relevance + cam @ relevance
    return relevance


def _describe(x):
    return list(x) if isinstance(x, dict) else f"{len(x)} layers"


# -- over a model: probing the attention layers -----------------------------------------


class _Probe:
    """What the probed softmax hooks do during one forward pass."""

    def __init__(self, deltas=None, gates=None):
        self.deltas = deltas  # one tensor per recorded call (added to the weights) or None
        self.gates = gates or {}  # id(layer) -> (H,) gate on the heads
        self.records = []  # (layer, weights as the layer computed them)

    def apply(self, layer, weights):
        index = len(self.records)
        self.records.append((layer, weights))
        gate = self.gates.get(id(layer))
        if gate is not None:
            gate = ops.cast(gate, weights.dtype)  # (H,), or (B, H) per example
            lead = (1, -1) if len(gate.shape) == 1 else (-1, gate.shape[-1])
            shape = (*lead, 1, 1) if len(weights.shape) == 4 else (lead[0], 1, 1)
            weights = weights * ops.reshape(gate, shape)
        if self.deltas is not None:
            weights = weights + ops.cast(self.deltas[index], weights.dtype)
        return weights


_ACTIVE: list = []  # the probe of the pass in progress
_PROBED_CLASSES: dict = {}


def _probed_class(cls):
    """A subclass of ``cls`` whose softmax hook goes through the active probe.

    Keras' and attnkit's ``MultiHeadAttention`` (and keras-hub's
    ``CachedMultiHeadAttention``) call ``_masked_softmax``; ``Attention`` and
    ``AdditiveAttention`` call ``_apply_scores``. Both libraries take their
    explicit path for a subclass that overrides these hooks.
    """
    if cls in _PROBED_CLASSES:
        return _PROBED_CLASSES[cls]
    if hasattr(cls, "_masked_softmax"):

        class Probed(cls):
            def _masked_softmax(self, attention_scores, attention_mask=None):
                weights = super()._masked_softmax(attention_scores, attention_mask)
                return _ACTIVE[-1].apply(self, weights)  # (B, H, Tq, Tv)

    else:

        class Probed(cls):
            def _apply_scores(self, scores, value, scores_mask=None, training=False):
                _, weights = super()._apply_scores(scores, value, scores_mask, training=training)
                used = _ACTIVE[-1].apply(self, weights)  # (B, Tq, Tv)
                return ops.matmul(used, ops.cast(value, used.dtype)), weights

    Probed.__name__ = Probed.__qualname__ = cls.__name__
    _PROBED_CLASSES[cls] = Probed
    return Probed


def probed_layers(model) -> list:
    """The attention layers of ``model`` whose weights the gradient methods can reach.

    Layers with a softmax hook (``_masked_softmax`` or ``_apply_scores``) and
    ``return_attention_scores``, wherever they sit (nested models, custom
    layers), in the order Keras tracks them.
    """
    layers = getattr(model, "_flatten_layers", None)
    found = [] if layers is None else list(layers(include_self=False, recursive=True))
    return [
        layer
        for layer in found
        if is_attention_layer(layer)
        and (hasattr(layer, "_masked_softmax") or hasattr(layer, "_apply_scores"))
    ]


@contextlib.contextmanager
def _probing(model, probe):
    layers = probed_layers(model)
    if not layers:
        raise ValueError(
            "Expected a model with attention layers that have a softmax hook "
            "(`_masked_softmax`, as MultiHeadAttention, or `_apply_scores`, as "
            f"Attention). Received: model={getattr(model, 'name', model)!r}"
        )
    swapped = []
    _ACTIVE.append(probe)
    try:
        for layer in layers:
            swapped.append((layer, type(layer)))
            layer.__class__ = _probed_class(type(layer))
        with recording(layers):  # asks for the weights: Keras' explicit path
            yield
    finally:
        _ACTIVE.pop()
        for layer, cls in swapped:
            layer.__class__ = cls


def _forward(model, inputs, probe):
    with _probing(model, probe):
        return model(inputs, training=False)


def _names(records):
    counts, names = {}, []
    for layer, _ in records:
        n = counts.get(id(layer), 0)
        counts[id(layer)] = n + 1
        names.append(layer.name if n == 0 else f"{layer.name}:{n}")
    return names


def _as_inputs(inputs):
    return keras.tree.map_structure(ops.convert_to_tensor, inputs)


class _Perturbed(keras.Model):
    """``forward(inputs, variables)`` with zero-initialised variables of ``shapes``.

    Its only trainable weights are those variables: the model under study is
    reached through ``forward``'s closure, which Keras does not track.
    """

    def __init__(self, forward, shapes):
        super().__init__(name="attnkit_explain_perturbation")
        self._forward_fn = forward
        self.perturbations = [
            self.add_weight(shape=s, initializer="zeros", name=f"delta_{i}", dtype="float32")
            for i, s in enumerate(shapes)
        ]

    def call(self, inputs):
        return self._forward_fn(inputs, list(self.perturbations))


class _Negated(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return -y_pred


def _sum_gradient(forward, inputs, shapes):
    """d Σ_b forward(inputs, δ)[b] / dδ at δ = 0, one float64 array per shape.

    Backend-agnostic: one step of plain SGD (learning rate 1, loss −Σ_b
    forward) on a model whose only weights are the δs moves them from 0 to
    exactly the gradient, with each backend's own autodiff inside Keras'
    ``train_on_batch``.
    """
    model = _Perturbed(forward, shapes)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss=_Negated(reduction="sum"),
        run_eagerly=True,
    )
    batch = keras.tree.flatten(inputs)[0].shape[0]
    model.train_on_batch(inputs, np.zeros((batch,), "float32"))
    return [_f64(v) for v in model.perturbations]


def _target_index(outputs, target):
    """The class of each example (B,) for an index ``target`` (None: the argmax)."""
    if len(outputs.shape) != 2:
        raise ValueError(
            "An integer `target` picks a class of (B, C) outputs; pass a callable "
            f"for other outputs. Received: outputs of shape {tuple(outputs.shape)}"
        )
    batch, classes = outputs.shape
    if target is None:
        return np.argmax(keras.ops.convert_to_numpy(outputs), axis=-1)
    index = np.broadcast_to(np.asarray(target), (batch,))
    if not np.issubdtype(index.dtype, np.integer) or index.min() < 0 or index.max() >= classes:
        raise ValueError(
            f"`target` must be a class index in [0, {classes}) or one per example, or "
            f"a callable. Received: target={target!r}"
        )
    return index


def _target_values(outputs, target):
    """y_b per example (B,): the target class's output, or ``target(outputs)``."""
    if callable(target):
        values = target(outputs)
        return ops.sum(ops.reshape(values, (ops.shape(values)[0], -1)), axis=-1)
    one_hot = ops.one_hot(ops.convert_to_tensor(np.asarray(target, "int32")), outputs.shape[-1])
    return ops.sum(outputs * ops.cast(one_hot, outputs.dtype), axis=-1)  # (B,)


def attention_gradients(model, inputs, target=None) -> dict:
    """Each attention layer's weights A and ∂y/∂A for a target output y.

    y = Σ_b outputs[b, target_b] for (B, C) outputs (the logit of a class:
    pass logits, not probabilities, as Chefer et al. do), or `Σ target(outputs)`
    for a callable. The gradient is taken by adding a zero tensor δ to each
    layer's weights inside its softmax hook (the forward pass is unchanged)
    and differentiating with the backend's autodiff (through Keras'
    `train_on_batch`, see `_sum_gradient`). Inference mode.

    Args:
        model: a built Keras model (functional, Sequential or subclassed) whose
            attention layers have a softmax hook (attnkit's and Keras'
            `MultiHeadAttention`, `Attention`, `AdditiveAttention`, keras-hub's
            `CachedMultiHeadAttention`).
        inputs: one batch, as `model(inputs)` takes it.
        target: a class index, one per example, a callable
            `outputs -> (B,)`, or `None` for each example's argmax class.
            Defaults to `None`.

    Returns:
        `{name: (weights, gradients)}` as float64 NumPy arrays, in call order;
        MultiHeadAttention's in the core layout (B, H, Tq, Tv) (attended axes
        flattened), Attention's (B, Tq, Tv). A layer called twice gives
        `"name"` and `"name:1"`.
    """
    probe = _Probe()
    outputs = _forward(model, _as_inputs(inputs), probe)
    if not callable(target):
        target = _target_index(outputs, target)  # fixes the argmax class once
    shapes = [tuple(w.shape) for _, w in probe.records]
    names = _names(probe.records)
    weights = [_f64(w) for _, w in probe.records]

    def forward(batch, deltas):
        return _target_values(_forward(model, batch, _Probe(deltas=deltas)), target)

    grads = _sum_gradient(forward, inputs, shapes)
    return {name: (w, g) for name, w, g in zip(names, weights, grads, strict=True)}


def _f64(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.stop_gradient(x)), dtype=np.float64)


def gradient_weighted_attention(model, inputs, target=None):
    """Chefer, Gur, Wolf 2021 relevance of a model: `gradient_rollout` of
    `attention_gradients(model, inputs, target)`. Self-attention layers over
    the same T tokens; returns (B, T, T) float64."""
    grads = attention_gradients(model, inputs, target)
    return gradient_rollout(
        {k: w for k, (w, _) in grads.items()}, {k: g for k, (_, g) in grads.items()}
    )


def _loss_function(loss):
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # per example, unreduced
    fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    if not callable(fn):
        raise ValueError(
            "`loss` must be a Keras loss (name, function or Loss). Received: loss=" + repr(loss)
        )
    return fn


def _per_example(values, batch):
    values = ops.reshape(values, (batch, -1))
    return ops.mean(values, axis=-1)  # (B,)


def head_importance(model, inputs, y_true, loss, method="mask") -> dict:
    """Per-head importance (Michel, Levy, Neubig 2019), one value per head of each layer.

    A head's output is gated by ξ_h, which multiplies its attention weights
    (as Hugging Face's `head_mask` does): ξ_h = 0 zeroes the head's output
    before the output projection.

    - `method="mask"`: I_h = L(ξ_h = 0) − L(ξ = 1), the change of the mean
      loss over the batch when that head alone is zeroed (one forward pass per
      head). Positive: the model needs the head.
    - `method="gradient"`: the paper's proxy I_h = mean_x |∂L(x)/∂ξ_h| at
      ξ = 1 (one backward pass).

    Args:
        model: as `attention_gradients`.
        inputs: one batch, as `model(inputs)` takes it.
        y_true: the targets of `loss`.
        loss: a Keras loss: its name, a function `(y_true, y_pred) -> per
            example losses`, or a `keras.losses.Loss` (its unreduced `call`).
        method: `"mask"` or `"gradient"`. Defaults to `"mask"`.

    Returns:
        `{name: (H,) float64}` per attention layer call (names as
        `attention_gradients`); a one-head `Attention` layer gives (1,).
    """
    _checks.one_of(method, "method", ("mask", "gradient"))
    loss_fn = _loss_function(loss)
    y_true = ops.convert_to_tensor(y_true)
    probe = _Probe()
    outputs = _forward(model, _as_inputs(inputs), probe)
    batch_size = outputs.shape[0]
    names = _names(probe.records)
    layers = [layer for layer, _ in probe.records]
    heads = [w.shape[1] if len(w.shape) == 4 else 1 for _, w in probe.records]
    for layer, name in zip(layers, names, strict=True):
        if layers.count(layer) > 1:
            raise ValueError(
                "Head masking gates a layer's heads in all of its calls: a layer called "
                f"more than once has no single importance per head. Received: layer={name!r}"
            )

    def mean_loss(gates):
        y_pred = _forward(model, _as_inputs(inputs), _Probe(gates=gates))
        return ops.mean(_per_example(loss_fn(y_true, y_pred), batch_size))

    if method == "mask":
        base = float(_f64(mean_loss({})))
        result = {}
        for layer, h, name in zip(layers, heads, names, strict=True):
            values = []
            for head in range(h):
                gate = np.ones(h, "float32")
                gate[head] = 0.0
                values.append(float(_f64(mean_loss({id(layer): gate}))) - base)
            result[name] = np.asarray(values)
        return result

    def forward(batch, perturbations):
        # Per-example gates 1 + ε (B, H): d Σ_x L(x) / d ε[x, h] = d L(x) / d ξ_h at ξ = 1.
        gates = {id(layer): 1.0 + eps for layer, eps in zip(layers, perturbations, strict=True)}
        y_pred = _forward(model, batch, _Probe(gates=gates))
        return _per_example(loss_fn(y_true, y_pred), batch_size)

    grads = _sum_gradient(forward, inputs, [(batch_size, h) for h in heads])
    return {name: np.abs(g).mean(axis=0) for name, g in zip(names, grads, strict=True)}
