"""The layer contract every attnkit layer must pass (like Keras' ``run_layer_test``).

``run_layer_contract`` checks, on the current Keras backend:

1. ``get_config`` / ``from_config`` round trip (config is plain data).
2. Symbolic and eager output shapes agree (attention scores included), and a
   layer built eagerly or symbolically holds the expected numbers of trainable
   weights, non-trainable weights and seed generators (on torch, also of
   ``torch_params``, which must track exactly those).
3. A functional model saves to ``.keras`` and reloads with
   ``keras.saving.load_model`` (default ``safe_mode=True``, no ``custom_objects``)
   giving identical outputs.
4. One ``fit`` step lowers the loss.
5. Under ``mixed_float16`` and ``mixed_bfloat16`` the weights stay float32 and
   the outputs are finite.
6. Masks propagate: with a Keras mask on the inputs, ``compute_mask`` and the
   returned mask agree with ``expected_mask`` (default: the query's mask).

How the layer is called is its *call style*, one of ``CALL_STYLES``, the same
vocabulary as ``attnkit.testing.registry``: ``"single"`` (``layer(x)``),
``"list"`` (``layer([query, value, ...])``), ``"qv"`` (``layer(query, value)``,
like MultiHeadAttention) and ``"rnn_cell"``: the layer is an RNN cell, run as
``keras.layers.RNN(cell, return_sequences=True)(inputs[0],
initial_state=cell.get_initial_state(memory=inputs[1]))``, so its inputs are
the decoder sequence and the encoder memory.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
from keras import ops


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _to_numpy(x):
    return [ops.convert_to_numpy(t) for t in _as_list(x)]


def _make_inputs(input_shapes, rng, dtype="float32"):
    return [rng.normal(size=shape).astype(dtype) for shape in input_shapes]


CALL_STYLES = ("single", "list", "qv", "rnn_cell")


def check_call_style(call_style):
    if call_style not in CALL_STYLES:
        raise ValueError(
            f"`call_style` must be one of {CALL_STYLES}. Received: call_style={call_style!r}"
        )
    return call_style


def call_layer(layer, inputs, call_style, call_kwargs=None):
    """Calls ``layer`` on the list ``inputs`` (tensors or ``keras.Input``s) in ``call_style``."""
    call_kwargs = call_kwargs or {}
    if call_style == "single":
        return layer(inputs[0], **call_kwargs)
    if call_style == "list":
        return layer(list(inputs), **call_kwargs)
    if call_style == "qv":
        return layer(*inputs, **call_kwargs)
    check_call_style(call_style)
    # rnn_cell: inputs are the decoder sequence (B, Ty, F) and the memory (B, Tx, D).
    state = layer.get_initial_state(memory=inputs[1])
    rnn = keras.layers.RNN(layer, return_sequences=True)
    return rnn(inputs[0], initial_state=state, **call_kwargs)


def _functional_model(layer, input_shapes, call_style, call_kwargs):
    inputs = [keras.Input(shape=s[1:], batch_size=None) for s in input_shapes]
    outputs = call_layer(layer, inputs, call_style, call_kwargs)
    # A single input stays unwrapped: the model is then called with one tensor.
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs), inputs


def _seed_generators(layer):
    """Every distinct seed generator of ``layer`` and its sublayers."""
    found = {}
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        for generator in sublayer._seed_generators:
            found.setdefault(id(generator), generator)
    return list(found.values())


def _assert_counts(layer, trainable, non_trainable, seed_generators, when):
    assert layer.built, f"{when}: the layer is not built"
    counts = {
        "trainable weights": (trainable, [w.path for w in layer.trainable_weights]),
        "non-trainable weights": (non_trainable, [w.path for w in layer.non_trainable_weights]),
        "seed generators": (seed_generators, _seed_generators(layer)),
    }
    for what, (expected, found) in counts.items():
        if expected is not None:
            assert len(found) == expected, (
                f"{when}: {len(found)} {what}, expected {expected}: {found}"
            )
    if keras.backend.backend() == "torch" and None not in (
        trainable,
        non_trainable,
        seed_generators,
    ):
        # Torch tracks every variable and seed state as a parameter; one
        # missing from torch_params would not move to the device or be saved.
        tracked = len(layer.torch_params)
        expected = trainable + non_trainable + seed_generators
        assert tracked == expected, f"{when}: {tracked} torch_params, expected {expected}"


def _assert_shapes_match(symbolic, eager, what):
    for s, e in zip(_as_list(symbolic), _as_list(eager), strict=True):
        s_shape = tuple(s.shape)
        e_shape = tuple(e.shape)
        ok = len(s_shape) == len(e_shape) and all(
            a is None or a == b for a, b in zip(s_shape, e_shape, strict=True)
        )
        assert ok, f"{what}: symbolic shape {s_shape} != eager shape {e_shape}"
        # Only the batch axis may stay unknown.
        assert all(a is not None for a in s_shape[1:]), (
            f"{what}: symbolic shape {s_shape} has unknown non-batch axes"
        )


def run_layer_contract(
    layer_cls,
    init_kwargs,
    input_shapes,
    *,
    call_style=None,
    call_kwargs=None,
    expected_output_shape=None,
    scores_kwarg="return_attention_scores",
    expected_scores_shape=None,
    mask_input=None,
    expected_mask=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    expected_num_seed_generators=None,
    check_fit=True,
    check_mixed_precision=True,
    atol=1e-6,
    seed=0,
):
    """Runs the contract; raises AssertionError with a clear message on failure.

    Args:
        layer_cls: the layer (or RNN cell) class.
        init_kwargs: constructor arguments, or a function without arguments
            returning them. Use a function when an argument is itself a layer
            (an RNN cell's wrapped cell): the contract makes several instances,
            some under a mixed-precision policy, and they must not share it.
        input_shapes: list of full input shapes (batch included).
        call_style: one of ``CALL_STYLES`` (see the module docstring). Defaults
            to ``"list"`` for several inputs, ``"single"`` for one.
        call_kwargs: extra call arguments (e.g. ``use_causal_mask=True``).
        expected_output_shape: the eager output shape, checked when given.
        scores_kwarg: name of the call flag that returns attention scores, or
            None when the layer has none.
        expected_scores_shape: the scores' shape, checked when given.
        mask_input: index of the input that carries a Keras mask in the mask
            check, or None to skip it.
        expected_mask: function ``(input_masks) -> expected output mask`` for the
            mask check. Defaults to the mask of input 0 (the query).
        expected_num_trainable_weights: checked on the built layer when given.
        expected_num_non_trainable_weights: checked on the built layer when given.
        expected_num_seed_generators: seed generators of the layer and its
            sublayers, checked when given.
    """
    rng = np.random.default_rng(seed)
    call_kwargs = dict(call_kwargs or {})
    if call_style is None:
        call_style = "list" if len(input_shapes) > 1 else "single"
    check_call_style(call_style)
    if call_style == "rnn_cell" and scores_kwarg is not None:
        raise ValueError(
            "An RNN cell is called by keras.layers.RNN, which has no scores flag: pass "
            f"scores_kwarg=None. Received: scores_kwarg={scores_kwarg!r}"
        )
    if call_style == "rnn_cell" and mask_input is not None:
        raise ValueError(
            "An RNN cell's masks reach it through keras.layers.RNN and "
            "`get_initial_state(memory_mask=...)`, not `compute_mask`: pass "
            f"mask_input=None. Received: mask_input={mask_input!r}"
        )
    make_kwargs = init_kwargs if callable(init_kwargs) else lambda: dict(init_kwargs)
    data = _make_inputs(input_shapes, rng)
    counts = (
        expected_num_trainable_weights,
        expected_num_non_trainable_weights,
        expected_num_seed_generators,
    )

    # 1. Config round trip.
    kwargs = make_kwargs()
    layer = layer_cls(**kwargs)
    config = layer.get_config()
    for name in kwargs:
        assert name in config, f"get_config() lacks constructor argument {name!r}"
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config, "from_config(get_config()) changed the config"
    serialized = keras.saving.serialize_keras_object(layer)
    keras.saving.deserialize_keras_object(serialized)

    # 2. Eager call, then symbolic shapes agree; weight and seed counts.
    eager = call_layer(layer, data, call_style, call_kwargs)
    _assert_counts(layer, *counts, when="built by an eager call")
    if expected_output_shape is not None:
        got = tuple(_as_list(eager)[0].shape)
        assert got == tuple(expected_output_shape), (
            f"output shape {got} != expected {tuple(expected_output_shape)}"
        )
    model, _ = _functional_model(layer, input_shapes, call_style, call_kwargs)
    _assert_shapes_match(model.outputs, eager, "output")
    symbolic_layer = layer_cls(**make_kwargs())
    _functional_model(symbolic_layer, input_shapes, call_style, call_kwargs)
    _assert_counts(symbolic_layer, *counts, when="built by a symbolic call")
    if scores_kwarg is not None:
        scored_kwargs = {**call_kwargs, scores_kwarg: True}
        eager_scored = call_layer(layer, data, call_style, scored_kwargs)
        assert isinstance(eager_scored, (list, tuple)) and len(eager_scored) == 2, (
            f"{scores_kwarg}=True must return (output, scores)"
        )
        if expected_scores_shape is not None:
            got = tuple(eager_scored[1].shape)
            assert got == tuple(expected_scores_shape), (
                f"scores shape {got} != expected {tuple(expected_scores_shape)}"
            )
        # A fresh layer: Keras' Function checks a graph with the outputs of a
        # layer's *first* call, so reusing `layer` with another output count fails.
        scored_model, _ = _functional_model(
            layer_cls.from_config(layer.get_config()), input_shapes, call_style, scored_kwargs
        )
        _assert_shapes_match(scored_model.outputs, eager_scored, "scores")
        np.testing.assert_allclose(
            _to_numpy(eager_scored[0])[0],
            _to_numpy(eager)[0],
            atol=atol,
            err_msg="output differs when scores are returned",
        )

    # 3. .keras round trip without custom_objects, in safe mode.
    expected = _to_numpy(model(data if len(data) > 1 else data[0]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
    got = _to_numpy(reloaded(data if len(data) > 1 else data[0]))
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, atol=atol, rtol=0, err_msg="reloaded model differs")

    # 4. One fit step lowers the loss.
    if check_fit and layer.trainable_weights:
        fit_layer = layer_cls(**make_kwargs())
        fit_model, _ = _functional_model(fit_layer, input_shapes, call_style, call_kwargs)
        x = data if len(data) > 1 else data[0]
        y = [rng.normal(size=tuple(o.shape)).astype("float32") for o in _as_list(fit_model(x))]
        y = y if len(y) > 1 else y[0]
        fit_model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-2), loss="mse")
        before = float(fit_model.evaluate(x, y, verbose=0))
        fit_model.fit(x, y, epochs=1, batch_size=input_shapes[0][0], verbose=0, shuffle=False)
        after = float(fit_model.evaluate(x, y, verbose=0))
        assert after < before, f"one fit step did not lower the loss: {before} -> {after}"

    # 5. Mixed precision: float32 weights, finite outputs.
    if check_mixed_precision:
        previous = keras.config.dtype_policy()
        try:
            for policy in ("mixed_float16", "mixed_bfloat16"):
                keras.config.set_dtype_policy(policy)
                mp_layer = layer_cls(**make_kwargs())
                out = call_layer(mp_layer, data, call_style, call_kwargs)
                for w in mp_layer.weights:
                    if keras.backend.standardize_dtype(w.dtype).startswith("float"):
                        assert keras.backend.standardize_dtype(w.dtype) == "float32", (
                            f"{policy}: weight {w.path} is {w.dtype}, expected float32"
                        )
                for o in _to_numpy(out):
                    assert np.all(np.isfinite(o.astype("float32"))), f"{policy}: non-finite output"
        finally:
            keras.config.set_dtype_policy(previous)

    # 6. Masks propagate.
    if mask_input is not None:
        masks = [None] * len(data)
        lengths = np.maximum(
            1, (np.arange(input_shapes[mask_input][0]) * 3) % input_shapes[mask_input][1]
        )
        masks[mask_input] = np.arange(input_shapes[mask_input][1])[None, :] < lengths[:, None]
        if call_style == "qv":
            computed = layer.compute_mask(data[0], masks[0])
        elif len(data) > 1:
            computed = layer.compute_mask(data, masks)
        else:
            computed = layer.compute_mask(data[0], masks[0])
        want = expected_mask(masks) if expected_mask is not None else masks[0]
        if want is None:
            assert computed is None, "compute_mask should return None"
        else:
            computed = _to_numpy(computed)[0]
            np.testing.assert_array_equal(
                computed, np.asarray(want), err_msg="mask did not propagate"
            )
    return layer
