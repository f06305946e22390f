"""Models reload in Keras' default safe mode, and tampered files fail loudly."""

import json
import zipfile

import keras
import numpy as np
import pytest

from attnkit.layers import Attention


def _save(tmp_path):
    q, v = keras.Input((5, 8)), keras.Input((7, 8))
    model = keras.Model([q, v], Attention(score_mode="general", name="att")([q, v]))
    path = tmp_path / "model.keras"
    model.save(path)
    return model, path


def _rewrite_config(path, out_path, edit):
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out_path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return out_path


def _layer_config(config, name="att"):
    return next(
        layer for layer in config["config"]["layers"] if layer["config"].get("name") == name
    )


def test_config_is_plain_data_and_reloads_in_safe_mode(tmp_path):
    model, path = _save(tmp_path)
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
    json.dumps(config)  # plain JSON all the way down
    reloaded = keras.saving.load_model(path)  # safe_mode=True by default
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, 5, 8)).astype("float32"), rng.normal(size=(2, 7, 8)).astype("float32")]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


def test_unknown_class_is_an_error(tmp_path):
    _, path = _save(tmp_path)

    def edit(config):
        layer = _layer_config(config)
        layer["class_name"] = "EvilAttention"
        layer["registered_name"] = "attnkit>EvilAttention"

    bad = _rewrite_config(path, tmp_path / "bad.keras", edit)
    with pytest.raises((TypeError, ValueError), match="EvilAttention"):
        keras.saving.load_model(bad)


def test_wrong_argument_type_is_a_clear_error(tmp_path):
    _, path = _save(tmp_path)

    def edit(config):
        _layer_config(config)["config"]["score_mode"] = 42

    bad = _rewrite_config(path, tmp_path / "bad.keras", edit)
    with pytest.raises((TypeError, ValueError), match="score_mode"):
        keras.saving.load_model(bad)


def test_injected_lambda_is_refused_in_safe_mode(tmp_path):
    q = keras.Input((5, 8))
    model = keras.Model(q, keras.layers.Lambda(lambda t: t * 2)(Attention()([q, q])))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path)
