"""attnkit under keras.distribution on 8 virtual CPU devices (JAX, in a subprocess)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
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


DEMO_ARGS = ["--epochs", "1", "--samples", "384", "--test-samples", "16", "--batch-size", "32"]


def _demo(tmp_path, *flags):
    """Runs ``attnkit demo dates`` in a fresh JAX process; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["KERAS_BACKEND"] = "jax"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnkit.cli.main",
            "demo",
            "dates",
            *DEMO_ARGS,
            *flags,
            "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution runs on JAX")
@pytest.mark.parametrize(
    "decoder",
    [
        "additive",
        # Two more demo runs (100 s on the 2-core machine); the cell's sharding
        # is checked in-process by test_layout_map_shards_additive_attention_by_units.
        pytest.param("cell", marks=pytest.mark.slow),
    ],
)
def test_dates_demo_distributed_trains_like_one_device(tmp_path, decoder):
    # The cell's nested mechanism matters for ModelParallel only (what is sharded).
    kinds = ("data", "model") if decoder == "additive" else ("model",)
    single = _demo(tmp_path / "single", "--decoder", decoder)
    out = {
        kind: _demo(tmp_path / kind, "--decoder", decoder, "--distribute", kind) for kind in kinds
    }
    model = out["model"]
    if "data" in out:
        assert "DataParallel over 8 devices, mesh {'batch': 8}" in out["data"]
    assert "ModelParallel over 8 devices, mesh {'batch': 4, 'model': 2}" in model
    layer = "attention" if decoder == "additive" else "decoder/attention_cell/bahdanau"
    key = "key_kernel" if decoder == "additive" else "memory_kernel"
    for weight in ("query_kernel", key):
        assert f"sharded {layer}/{weight} (64, 32) as (None, 'model')" in model
    # Same seed, data and order: one epoch on 8 devices ends with the weights
    # of one device, up to float32 reduction order.
    reference = keras.saving.load_model(tmp_path / "single" / "dates.keras").get_weights()
    assert "exact-match accuracy" in single
    for name in kinds:
        weights = keras.saving.load_model(tmp_path / name / "dates.keras").get_weights()
        for a, b in zip(reference, weights, strict=True):
            np.testing.assert_allclose(b, a, atol=2e-5, err_msg=name)


def test_dates_demo_distribute_errors(capsys, tmp_path):
    from attnkit.cli import main as cli

    rc = cli.main(["demo", "dates", "--devices", "2", "--out", str(tmp_path)])
    assert rc == 2
    assert "`--devices` needs `--distribute`. Received: --devices 2" in capsys.readouterr().err
    if keras.backend.backend() != "jax":
        rc = cli.main(["demo", "dates", "--distribute", "data", "--out", str(tmp_path)])
        assert rc == 2
        err = capsys.readouterr().err
        assert (
            f"needs the JAX backend (--backend jax). Received: backend='{keras.backend.backend()}'"
            in err
        )


def test_layout_map_shards_additive_attention_by_units():
    if keras.backend.backend() != "jax":
        pytest.skip("device meshes are built on JAX devices")
    from attnkit.distribution import layout_map
    from attnkit.models import date_translator as dt

    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((1, len(devices)), ("batch", "model"), devices)
    additive = dt.build_training_model("additive")  # AdditiveAttention(units=32)
    lmap = layout_map(additive, mesh)
    for path in ("attention/query_kernel", "attention/key_kernel"):
        assert lmap[path].axes == (None, "model")
    for path in ("attention/bias", "attention/scale"):  # b and v, (units,)
        assert lmap[path].axes == ("model",)
    assert lmap["decoder/lstm_cell/kernel"] is None  # the rest stays replicated
    cell = dt.build_training_model("cell")  # the mechanism nested in the RNN cell
    lmap = layout_map(cell, mesh)
    prefix = "decoder/attention_cell/bahdanau"
    assert lmap[f"{prefix}/query_kernel"].axes == (None, "model")
    assert lmap[f"{prefix}/memory_kernel"].axes == (None, "model")
    assert lmap[f"{prefix}/attention_v"].axes == ("model",)
    assert lmap["decoder/attention_cell/attention_layer/kernel"] is None
    # An unbuilt attention layer cannot be mapped: its weights do not exist yet.
    from attnkit.layers import AdditiveAttention

    unbuilt = keras.Sequential([AdditiveAttention(units=4, name="later")])
    with pytest.raises(ValueError, match="'later' is not built yet"):
        layout_map(unbuilt, mesh)
    with pytest.raises(ValueError, match="Received: model_or_names='attention'"):
        layout_map("attention", mesh)
