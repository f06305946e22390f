import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the default dtype policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


try:
    from hypothesis import HealthCheck, settings

    _common = dict(
        deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    # `make test`'s slice: JAX compiles every op for every new shape and dtype
    # (seconds an example where torch and TensorFlow take milliseconds), so it
    # runs fewer examples per property; tests/test_layer_properties.py sets its
    # own counts (LAYER_EXAMPLES).
    _default_examples = {"jax": 6}.get(keras.backend.backend(), 25)
    settings.register_profile(
        "default", max_examples=_default_examples, derandomize=True, **_common
    )
    settings.register_profile(
        "fuzz", max_examples=int(os.environ.get("ATTNKIT_FUZZ_EXAMPLES", "3400")), **_common
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # hypothesis is a test extra; property tests skip without it
    pass
