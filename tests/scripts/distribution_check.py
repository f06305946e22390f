"""Run under KERAS_BACKEND=jax with 8 virtual CPU devices; prints one JSON line.

Trains the same small attention model for a few steps on one device, under
DataParallel on 8 devices, and under ModelParallel (2 x 4 mesh, heads sharded
with attnkit.distribution.layout_map), and reports the losses and shardings.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from attnkit.distribution import layout_map  # noqa: E402

LAYER = sys.argv[1] if len(sys.argv) > 1 else "keras"


def mha(**kwargs):
    if LAYER == "attnkit":
        from attnkit.layers import MultiHeadAttention

        return MultiHeadAttention(**kwargs)
    return keras.layers.MultiHeadAttention(**kwargs)


def build():
    keras.utils.set_random_seed(0)
    x = keras.Input((12, 16))
    h = mha(num_heads=4, key_dim=8, name="mha")(x, x)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(1)(h)
    model = keras.Model(x, out)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


rng = np.random.default_rng(0)
data_x = rng.normal(size=(64, 12, 16)).astype("float32")
data_y = rng.normal(size=(64, 1)).astype("float32")


def train(model):
    history = model.fit(data_x, data_y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return [float(v) for v in history.history["loss"]]


reference = build()
initial = reference.get_weights()
single = train(reference)

devices = keras.distribution.list_devices()
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
dp_model = build()
dp_model.set_weights(initial)
data_parallel = train(dp_model)

mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
keras.distribution.set_distribution(None)
probe = build()  # a built model to read the attention layers from
lmap = layout_map(probe, mesh)
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=lmap, batch_dim_name="batch")
)
mp_model = build()
mp_model.set_weights(initial)
model_parallel = train(mp_model)
specs = {v.path: list(v.value.sharding.spec) for v in mp_model.weights}
print(
    json.dumps(
        {
            "devices": len(devices),
            "single": single,
            "data_parallel": data_parallel,
            "model_parallel": model_parallel,
            "specs": specs,
        }
    )
)
