import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# JAX compiles every op for every new shape (on this 2-core machine most of the
# JAX suite's time): LLVM's optimisation level 0 compiles about a quarter faster
# (tests/test_lm_demo.py + tests/test_chunked.py: 159 s -> 120 s), and the
# tests' small computations hardly run slower. It changes LLVM's code
# generation only (XLA's HLO passes are the same; tolerances are unchanged and
# the suite passes as before). Set before Keras imports JAX.
_O0 = "--xla_backend_optimization_level=0"
if _O0 not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_O0}".strip()

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


# Cross-backend checks (a model saved here loaded there, the same decoded
# tokens there) compare each backend's suite with the next of this cycle: the
# three suites of `make test` then cover every backend as source and as
# target, with three subprocesses instead of six.
_NEXT_BACKEND = {"jax": "torch", "torch": "tensorflow", "tensorflow": "jax"}


@pytest.fixture
def next_backend():
    return _NEXT_BACKEND[keras.backend.backend()]


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


def pytest_collection_modifyitems(config, items):
    """``backend_independent`` tests run in one backend's suite of ``make test``.

    `make test` runs the suite once per backend and names the first in
    ATTNKIT_BACKEND_INDEPENDENT_ON; tests that do not depend on the backend
    (packaging: extras simulated missing in subprocesses) run there only.
    Unset (a plain `pytest`), they run under any backend.
    """
    only_on = os.environ.get("ATTNKIT_BACKEND_INDEPENDENT_ON")
    if not only_on or only_on == keras.backend.backend():
        return
    skip = pytest.mark.skip(reason=f"backend-independent: run in the {only_on} suite")
    for item in items:
        if item.get_closest_marker("backend_independent"):
            item.add_marker(skip)
