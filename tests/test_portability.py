"""A model saved under this backend loads under the other two with the same outputs."""

import inspect
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from layer_examples import EXAMPLES, build_model

import attnkit.layers

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "portability_load.py")
ALL_BACKENDS = ("jax", "torch", "tensorflow")


def public_layers():
    return {
        name: obj
        for name, obj in vars(attnkit.layers).items()
        if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer) and not name.startswith("_")
    }


def test_every_public_layer_has_an_example():
    missing = sorted(set(public_layers()) - set(EXAMPLES))
    assert not missing, f"add these layers to tests/layer_examples.py: {missing}"


@pytest.mark.parametrize("target", [b for b in ALL_BACKENDS if b != keras.backend.backend()])
def test_saved_models_load_under_other_backends(target, tmp_path):
    layers = public_layers()
    if not layers:
        pytest.skip("no public layers yet")
    for name, cls in layers.items():
        model, xs = build_model(name, cls)
        out = model(xs if len(xs) > 1 else xs[0])
        out = out if isinstance(out, (list, tuple)) else [out]
        model.save(tmp_path / f"{name}.keras")
        arrays = {f"x{i}": x for i, x in enumerate(xs)}
        arrays.update({f"y{i}": keras.ops.convert_to_numpy(o) for i, o in enumerate(out)})
        np.savez(tmp_path / f"{name}.npz", **arrays)
    env = dict(os.environ, KERAS_BACKEND=target, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == set(layers)
    bad = {n: r for n, r in results.items() if isinstance(r, str) or r > 1e-5}
    assert not bad, f"{keras.backend.backend()} -> {target}: {bad}"
