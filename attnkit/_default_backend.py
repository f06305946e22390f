"""attnkit's default Keras backend (JAX), used only when no usable choice exists.

Keras picks its backend from ``KERAS_BACKEND``, else ``~/.keras/keras.json``
(which Keras itself writes on first import, saying "tensorflow"), else
TensorFlow. ``pip install attnkit`` installs JAX, the fastest backend for
training on this class of CPU (see the README), not TensorFlow. So when
``KERAS_BACKEND`` is unset and the configured backend is not installed, attnkit
selects JAX before Keras is imported. An installed, explicit choice always wins.
"""

import importlib.util
import json
import os
import sys

DEFAULT_BACKEND = "jax"
_MODULES = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow", "numpy": "numpy"}


def configured_backend():
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    try:
        with open(os.path.join(keras_home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def apply_default_backend():
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND"):
        return
    module = _MODULES.get(configured_backend())
    if module is not None and importlib.util.find_spec(module) is not None:
        return
    os.environ["KERAS_BACKEND"] = DEFAULT_BACKEND
