"""attnkit under keras.distribution on 8 virtual CPU devices (JAX, in a subprocess)."""

import json
import os
import subprocess
import sys

import keras
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "distribution_check.py")


def _layers():
    names = ["keras"]
    try:
        from attnkit.layers import MultiHeadAttention  # noqa: F401

        names.append("attnkit")
    except ImportError:
        pass
    return names


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution runs on JAX")
@pytest.mark.parametrize("layer", _layers())
def test_data_and_model_parallel_match_single_device(layer):
    env = dict(os.environ, KERAS_BACKEND="jax")
    proc = subprocess.run(
        [sys.executable, SCRIPT, layer], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    # Same data, same initial weights: only the reduction order differs.
    for name in ("data_parallel", "model_parallel"):
        for a, b in zip(result["single"], result[name], strict=True):
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (name, result["single"], result[name])
    specs = result["specs"]
    assert specs["mha/query/kernel"] == [None, "model", None]
    assert specs["mha/key/kernel"] == [None, "model", None]
    assert specs["mha/value/bias"] == ["model", None]
    assert specs["mha/attention_output/kernel"] == ["model", None, None]
    dense = [p for p in specs if p.endswith("kernel") and not p.startswith("mha/")]
    assert dense and all("model" not in specs[p] for p in dense)  # the rest is replicated


def test_layout_map_rejects_indivisible_heads():
    if keras.backend.backend() != "jax":
        pytest.skip("device meshes are built on JAX devices")
    from attnkit.distribution import layout_map

    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((1, len(devices)), ("batch", "model"), devices)
    with pytest.raises(ValueError, match=r"model_axis.*Received: model_axis='heads'"):
        layout_map(["mha"], mesh, model_axis="heads")
    lmap = layout_map(["enc"], mesh)
    assert lmap["enc/query/kernel"].axes == (None, "model", None)
    assert lmap["block/enc/attention_output/kernel"].axes == ("model", None, None)
    assert lmap["enc_other/query/kernel"] is None
