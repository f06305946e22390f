"""Measures what decides attnkit's default backend: training and attention speed.

Each backend runs in its own subprocess. Prints one table:
  - train ms/step: Embedding -> BiLSTM(64) -> attention pooling -> Dense,
    batch 64, T=30 (the model our users write), steady state (median of steps
    after the first epoch's compilation);
  - attention ms: attnkit.ops.attention default path, B=1, H=8, D=64, N=4096,
    forward, median of 5 after warm-up;
  - import s: `import keras` with that backend.

Usage: .venv/bin/python benchmarks/backend_choice.py
"""

import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, time
t0 = time.perf_counter()
import keras
import_s = time.perf_counter() - t0
import numpy as np
from keras import ops
from attnkit.ops import attention, masked_softmax

class Pool(keras.layers.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 1), initializer="glorot_uniform")
    def call(self, h, mask=None):
        s = ops.squeeze(ops.matmul(ops.tanh(h), self.w), -1)
        a = masked_softmax(s, mask, axis=-1)
        return ops.sum(h * ops.expand_dims(ops.cast(a, h.dtype), -1), axis=1)
    def compute_mask(self, x, mask=None):
        return None

rng = np.random.default_rng(0)
x = rng.integers(1, 1000, size=(64 * 40, 30))
y = rng.integers(0, 2, size=(64 * 40,))
inp = keras.Input((30,), dtype="int32")
h = keras.layers.Embedding(1000, 64, mask_zero=True)(inp)
h = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True))(h)
out = keras.layers.Dense(1, activation="sigmoid")(Pool()(h))
model = keras.Model(inp, out)
model.compile("adam", "binary_crossentropy")

class Timer(keras.callbacks.Callback):
    def __init__(self):
        self.times = []
    def on_train_batch_begin(self, batch, logs=None):
        self.t = time.perf_counter()
    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.t)
timer = Timer()
model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[timer])
train_ms = 1000 * float(np.median(timer.times[40:]))

q = rng.normal(size=(1, 4096, 8, 64)).astype("float32")
q, k, v = (ops.convert_to_tensor(t) for t in (q, q[:, ::-1].copy(), q))
fn = lambda q, k, v: attention(q, k, v)
if keras.backend.backend() == "jax":
    import jax
    fn = jax.jit(fn)
times = []
for i in range(6):
    t = time.perf_counter()
    ops.convert_to_numpy(fn(q, k, v))
    times.append(time.perf_counter() - t)
attn_ms = 1000 * float(np.median(times[1:]))
print(json.dumps({"import_s": import_s, "train_ms": train_ms, "attn_ms": attn_ms}))
"""


def main():
    rows = []
    for backend in ("jax", "torch", "tensorflow"):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            rows.append((backend, None))
            print(proc.stderr[-2000:], file=sys.stderr)
            continue
        rows.append((backend, json.loads(proc.stdout.strip().splitlines()[-1])))
    print("| backend | train ms/step | attention N=4096 ms | import keras s |")
    print("|---|---|---|---|")
    for backend, r in rows:
        if r is None:
            print(f"| {backend} | fails | fails | fails |")
        else:
            print(f"| {backend} | {r['train_ms']:.1f} | {r['attn_ms']:.0f} | {r['import_s']:.1f} |")


if __name__ == "__main__":
    main()
