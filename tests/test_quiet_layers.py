"""No layer prints or warns in normal use (build, call, fit, predict, save/load)."""

import warnings

import keras
import pytest

from attnkit.testing.registry import EXAMPLES, build_model, public_layers

LAYERS = public_layers()


def _relevant(w):
    # Deprecation notices raised inside Keras and the backends about their own
    # internals (e.g. Keras variables' __array__ under NumPy 2, raised by any
    # Keras model) are not ours to fix; every other warning counts, Keras'
    # UserWarnings about our layers (dropped masks, unbuilt weights) included.
    internal = any(
        part in w.filename
        for part in ("/keras/src/", "/tensorflow/", "/jax/", "/torch/", "/google/")
    )
    return not (internal and issubclass(w.category, (DeprecationWarning, FutureWarning)))


@pytest.mark.parametrize("name", sorted(set(LAYERS) & set(EXAMPLES)))
def test_layer_is_quiet(name, capsys, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, xs = build_model(name, LAYERS[name])
        x = xs if len(xs) > 1 else xs[0]
        out = model(x)
        model.predict(x, verbose=0)
        first = out[0] if isinstance(out, (list, tuple)) else out
        if model.trainable_weights:  # Keras rightly warns when fitting nothing
            model.compile(optimizer="sgd", loss="mse")
            model.fit(x, keras.ops.zeros_like(first), epochs=1, verbose=0)
        model.save(tmp_path / "m.keras")
        keras.saving.load_model(tmp_path / "m.keras")
    relevant = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if _relevant(w)
    ]
    assert not relevant, relevant
    printed = capsys.readouterr()
    assert printed.out == "", printed.out
