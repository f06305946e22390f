"""Loads .keras files saved under another backend and checks their outputs.

Usage: KERAS_BACKEND=<b> python portability_load.py DIR
DIR holds NAME.keras and NAME.npz (inputs x0.., expected output y0..) pairs.
Prints one JSON line {name: max_abs_error or "error: ..."}.
"""

import glob
import json
import os
import sys

import keras
import numpy as np

import attnkit  # noqa: F401  (registers the layers)

results = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.keras"))):
    name = os.path.basename(path)[: -len(".keras")]
    try:
        data = np.load(path[: -len(".keras")] + ".npz")
        xs = [data[f"x{i}"] for i in range(sum(k.startswith("x") for k in data.files))]
        ys = [data[f"y{i}"] for i in range(sum(k.startswith("y") for k in data.files))]
        model = keras.saving.load_model(path)
        out = model(xs if len(xs) > 1 else xs[0])
        out = out if isinstance(out, (list, tuple)) else [out]
        results[name] = max(
            float(np.max(np.abs(keras.ops.convert_to_numpy(o) - y)))
            for o, y in zip(out, ys, strict=True)
        )
    except Exception as e:  # reported, not hidden: the test fails on it
        results[name] = f"error: {type(e).__name__}: {e}"[:500]
print(json.dumps(results))
