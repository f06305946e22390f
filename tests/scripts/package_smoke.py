"""Checks an installed attnkit wheel in a fresh virtual environment (`make package-check`).

Usage: python package_smoke.py VERSION   (run outside the source tree, with the
fresh environment's Python, KERAS_BACKEND unset so attnkit picks its default)

Checks that the import comes from the installed wheel (not a source tree), that
it has the expected version and ships ``py.typed``, that neither matplotlib nor
scikit-learn came with the core dependencies, that ``attnkit``,
``attnkit.layers``, ``attnkit.ops`` and ``attnkit.testing`` import and a tiny model with
``attnkit.layers.Attention`` fits for one epoch, and that the extras' messages
appear when they are really missing (``import attnkit.viz``, ``attnkit demo
digits``). Prints the environment's distributions; exits non-zero on a failure.
"""

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

expected_version = sys.argv[1]
site = Path(sysconfig.get_paths()["purelib"]).resolve()

names = sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions())
print("installed:", " ".join(names))
for module, dist in (("matplotlib", "matplotlib"), ("sklearn", "scikit-learn")):
    assert importlib.util.find_spec(module) is None, f"{dist} is installed with the core"
    assert dist not in names, f"{dist} is installed with the core"

import attnkit  # noqa: E402  (first: it picks the default backend before Keras starts)
import attnkit.layers  # noqa: E402
import attnkit.ops  # noqa: E402
import attnkit.testing  # noqa: E402  (the layer contract: no pytest, no hypothesis)

package = Path(attnkit.__file__).resolve().parent
assert package.parent == site, f"attnkit imported from {package}, not the wheel in {site}"
assert (package / "py.typed").is_file(), "py.typed is not in the wheel"
assert attnkit.__version__ == expected_version, (attnkit.__version__, expected_version)

import keras  # noqa: E402
import numpy as np  # noqa: E402

assert keras.backend.backend() == "jax", keras.backend.backend()

rng = np.random.default_rng(0)
query = keras.Input((6, 8))
value = keras.Input((5, 8))
attended = attnkit.layers.Attention(score_mode="scaled_dot")([query, value])
output = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(attended))
model = keras.Model([query, value], output)
model.compile(optimizer="adam", loss="mse")
x = [rng.normal(size=(32, 6, 8)).astype("float32"), rng.normal(size=(32, 5, 8)).astype("float32")]
y = rng.normal(size=(32, 1)).astype("float32")
history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
loss = history.history["loss"][0]
assert np.isfinite(loss), loss
weights = attnkit.ops.attention_weights(x[0], x[1])  # (B, Tq, Tv)
assert tuple(weights.shape) == (32, 6, 5), weights.shape

try:
    import attnkit.viz  # noqa: F401
except ImportError as error:
    assert str(error) == "attnkit.viz requires matplotlib: pip install 'attnkit[viz]'", error
else:
    raise AssertionError("attnkit.viz imported without matplotlib")

cli = Path(sys.executable).parent / "attnkit"
done = subprocess.run(
    [str(cli), "demo", "digits", "--epochs", "1"], capture_output=True, text=True, env=os.environ
)
line = "attnkit: attnkit demo digits requires scikit-learn: pip install 'attnkit[demos]'"
assert done.returncode == 1, (done.returncode, done.stderr)
assert line in done.stderr.splitlines() and "Traceback" not in done.stderr, done.stderr

print(
    f"package check: attnkit {attnkit.__version__} from the wheel on {keras.backend.backend()}, "
    f"one epoch of Attention fit (loss {loss:.3f}); no matplotlib, no scikit-learn; "
    "the extras' messages are right"
)
