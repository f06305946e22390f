"""Suite-wide checks over the layer registry (``attnkit.testing.registry``).

Every public layer has an example; every example passes the layer contract
with the weight and seed-generator counts it states; a model saved under this
backend loads under the other two with the same outputs.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from attnkit.layers import AttentionPooling, AttentionRNNCell
from attnkit.testing import run_layer_contract
from attnkit.testing.registry import EXAMPLES, build_model, contract_arguments, public_layers

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "portability_load.py")


def test_every_public_layer_has_an_example():
    layers = public_layers()
    assert layers, "attnkit.layers exports no layer"
    missing = sorted(set(layers) - set(EXAMPLES))
    assert not missing, f"add these layers to attnkit/testing/registry.py: {missing}"
    unknown = sorted(set(EXAMPLES) - set(layers))
    assert not unknown, f"registry entries without a public layer: {unknown}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_passes_the_layer_contract(name):
    run_layer_contract(**contract_arguments(name))


# The contract's own checks can fail ---------------------------------------------


def _pooling(**overrides):
    return {**contract_arguments("AttentionPooling"), "check_fit": False, **overrides}


@pytest.mark.parametrize(
    "count,message",
    [
        ("expected_num_trainable_weights", r"3 trainable weights, expected 4"),
        ("expected_num_non_trainable_weights", r"0 non-trainable weights, expected 1"),
        ("expected_num_seed_generators", r"0 seed generators, expected 1"),
    ],
)
def test_contract_fails_on_a_wrong_count(count, message):
    wrong = _pooling(check_mixed_precision=False)
    wrong[count] += 1
    with pytest.raises(AssertionError, match=message):
        run_layer_contract(**wrong)


def test_contract_counts_a_dropout_seed_generator():
    kwargs = {"units": 6, "dropout": 0.25, "seed": 3}
    run_layer_contract(**_pooling(init_kwargs=kwargs, expected_num_seed_generators=1))
    with pytest.raises(AssertionError, match=r"1 seed generators, expected 0"):
        run_layer_contract(**_pooling(init_kwargs=kwargs, check_mixed_precision=False))


def test_contract_counts_the_wrapped_cell_of_an_rnn_cell():
    arguments = {**contract_arguments("AttentionRNNCell"), "check_mixed_precision": False}
    arguments["expected_num_seed_generators"] = 0
    with pytest.raises(AssertionError, match=r"1 seed generators, expected 0"):
        run_layer_contract(**arguments)


def test_contract_call_style_errors():
    with pytest.raises(ValueError, match=r"Received: call_style='tuple'"):
        run_layer_contract(**_pooling(call_style="tuple"))
    cell = contract_arguments("AttentionRNNCell")
    assert cell["layer_cls"] is AttentionRNNCell
    with pytest.raises(ValueError, match=r"Received: scores_kwarg='return_attention_scores'"):
        run_layer_contract(**{**cell, "scores_kwarg": "return_attention_scores"})
    with pytest.raises(ValueError, match=r"Received: mask_input=0"):
        run_layer_contract(**{**cell, "mask_input": 0})
    assert contract_arguments("AttentionPooling")["layer_cls"] is AttentionPooling


# Portability -----------------------------------------------------------------------


def test_saved_models_load_under_other_backends(next_backend, tmp_path):
    """Saved here, loaded under the next backend of conftest's cycle."""
    target = next_backend
    layers = public_layers()
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
