"""Counter-based Gaussian noise that can be drawn inside any traced loop.

``keras.random`` draws from a ``SeedGenerator``, whose state is a variable
updated on every draw. Inside the loop of ``keras.layers.RNN`` on JAX (a
``lax.scan``) that update leaks a tracer, so a recurrent cell cannot draw
fresh noise at each step that way. Here the randomness is a pure function of
integers the caller carries in its recurrent state instead: a per-example
seed and a step counter, hashed together with the position (a counter-based
generator, as in Salmon et al. 2011, "Parallel random numbers: as easy as
1, 2, 3"). The hash is 32-bit integer arithmetic in ``keras.ops`` (the
``lowbias32`` mixer), so the same seed gives the same noise on every backend.

The state is a ``(B, STATE_SIZE)`` float tensor of integers in [0, 256): three
seed bytes and a two-byte step counter. Every float dtype holds such integers
exactly (bfloat16 has 8 significant bits), so the state survives an RNN cell
that casts its states to a float16 or bfloat16 compute dtype. The counter
wraps after 65 536 steps.
"""

from __future__ import annotations

import math

import keras
from keras import ops

STATE_SIZE = 5  # seed bytes 0-2, counter low byte, counter high byte
_M1 = 0x7FEB352D
_M2 = 0x846CA68B - (1 << 32)  # as a signed 32-bit integer


def initial_state(batch_size, seed_generator):
    """A fresh ``(B, STATE_SIZE)`` state: a random 24-bit seed per example, counter 0.

    Draws from ``seed_generator`` (outside any loop), so every call of the
    model starts from new seeds while runs with the same seed repeat.
    """
    seed = keras.random.randint((batch_size, 3), 0, 256, seed=seed_generator)
    return ops.concatenate(
        [ops.cast(seed, "float32"), ops.zeros((batch_size, 2), "float32")], axis=-1
    )


def _i32(x):
    return ops.convert_to_tensor(x, "int32")


def _shift_right(x, bits):
    # Logical shift of a signed 32-bit value: arithmetic shift, high bits cleared.
    return ops.bitwise_and(ops.right_shift(x, _i32(bits)), _i32((1 << (32 - bits)) - 1))


def _mix(x):
    """lowbias32 (C. Wellons): a bijective avalanche hash of 32-bit integers."""
    x = ops.bitwise_xor(x, _shift_right(x, 16))
    x = ops.multiply(x, _i32(_M1))
    x = ops.bitwise_xor(x, _shift_right(x, 15))
    x = ops.multiply(x, _i32(_M2))
    return ops.bitwise_xor(x, _shift_right(x, 16))


def _uniform(key, stream):
    # 24 high bits of the hash -> (0, 1), never exactly 0 (log is taken).
    bits = _shift_right(_mix(ops.bitwise_xor(key, _i32(stream * 0x27D4EB2F))), 8)
    return (ops.cast(bits, "float32") + 0.5) / float(1 << 24)


def normal(state, like):
    """Standard normal noise shaped like ``like`` (B, T), and the next state.

    Args:
        state: ``(B, STATE_SIZE)`` from ``initial_state`` (any float dtype).
        like: a (B, T) tensor giving the shape (T may be dynamic).

    Returns:
        ``(noise (B, T) float32, next_state (B, STATE_SIZE) float32)``.
    """
    s = ops.cast(ops.round(ops.cast(state, "float32")), "int32")  # (B, 5)
    seed = s[:, 0] + s[:, 1] * 256 + s[:, 2] * 65536  # (B,)
    counter = s[:, 3] + s[:, 4] * 256  # (B,)
    key = _mix(ops.bitwise_xor(_mix(seed), counter))  # (B,)
    positions = ops.cumsum(ops.ones_like(like, "int32"), axis=1) - 1  # (B, T): 0, 1, ...
    key = _mix(ops.bitwise_xor(key[:, None], ops.multiply(positions, _i32(0x9E3779B))))
    u1, u2 = _uniform(key, 1), _uniform(key, 2)  # (B, T) each, in (0, 1)
    noise = ops.sqrt(-2.0 * ops.log(u1)) * ops.cos((2.0 * math.pi) * u2)  # Box-Muller
    low = ops.mod(s[:, 3] + 1, 256)
    high = ops.mod(s[:, 4] + ops.cast(ops.equal(low, 0), "int32"), 256)
    next_state = ops.concatenate(
        [ops.cast(s[:, :3], "float32"), ops.cast(ops.stack([low, high], axis=-1), "float32")],
        axis=-1,
    )
    return noise, next_state


# Attention dropout ---------------------------------------------------------------
#
# The keep-mask of attention dropout is a pure function of a per-call key and
# the global (batch, head, query, key) indices of each weight, so the chunked
# path's forward and its recomputing backward regenerate the same mask block by
# block, and the naive path draws exactly the same one (same seed: same output
# on both paths, up to rounding). Rows are hashed once per (batch, head, query);
# each weight then costs one more ``lowbias32`` round on its key index. The
# comparison is integer-only, so an integer seed gives the same mask on every
# backend.

_ROW_B, _ROW_H, _ROW_Q = 0x2545F491, 0x1B873593, 0x68E31DA4  # odd multipliers
_COL = 0x9E3779B1 - (1 << 32)  # golden-ratio Weyl step, as a signed 32-bit integer
_INT_SEED_SALT = 0x5BD1E995


def dropout_key(seed):
    """The per-call dropout key: an int32 scalar tensor.

    An integer ``seed`` maps to its key without touching any backend's random
    generator, so it gives the same mask on every backend (and, as with
    ``keras.random.dropout``, on every call). A ``keras.random.SeedGenerator``
    (or None: Keras' global generator) is drawn from once, so successive calls
    differ and a generator built from a fixed seed repeats its sequence.
    """
    if isinstance(seed, int) and not isinstance(seed, bool):
        words = (seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF)
        s0, s1 = _i32(words[0]), _i32(words[1] ^ _INT_SEED_SALT)
    else:
        drawn = keras.random.randint((2,), 0, 2**31 - 1, dtype="int32", seed=seed)
        s0, s1 = drawn[0], drawn[1]
    return _mix(ops.bitwise_xor(_mix(s0), s1))


def keep_threshold(rate):
    """The 24-bit integer a weight's hash must reach to be kept: keep
    probability ``1 - threshold / 2**24`` (``rate`` rounded to 2**-24)."""
    return int(round(rate * (1 << 24)))


def row_keys(key, batch, head, query):
    """Hashes of (key, batch, head, query): int32 tensors broadcast together.

    ``batch``, ``head`` and ``query`` are int32 index tensors, each already
    shaped to broadcast to the rows (e.g. (B, 1, 1, 1), (1, Hkv, G, 1),
    (1, 1, 1, q)); each is mixed in at its own (small) shape.
    """
    x = _mix(ops.bitwise_xor(key, ops.multiply(batch, _i32(_ROW_B))))
    x = _mix(ops.bitwise_xor(x, ops.multiply(head, _i32(_ROW_H))))
    return _mix(ops.bitwise_xor(x, ops.multiply(query, _i32(_ROW_Q))))


def keep_mask(rows, kv, threshold):
    """Bool keep-mask of the weights: ``rows`` (..., q) from ``row_keys``,
    ``kv`` (k,) int32 global key indices -> (..., q, k)."""
    bits = _mix(ops.bitwise_xor(rows[..., None], ops.multiply(kv, _i32(_COL))))
    return ops.greater_equal(_shift_right(bits, 8), _i32(threshold))


def dropout_rows(key, batch, num_heads, kv_heads, q_start, q_len):
    """Row hashes (B, Hkv, G, q_len) of query rows ``q_start + [0, q_len)``
    (counted from 0 in the query, not placed by an alignment) of every query
    head ``h``, held by key/value head ``h // G`` (Keras' grouped layout)."""
    groups = num_heads // kv_heads
    b = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1))  # (B, 1, 1, 1)
    h = ops.reshape(ops.arange(num_heads, dtype="int32"), (1, kv_heads, groups, 1))
    q = ops.reshape(ops.arange(q_len, dtype="int32") + q_start, (1, 1, 1, -1))  # (1, 1, 1, q)
    return row_keys(key, b, h, q)  # (B, Hkv, G, q)


def dropout_factor(rows, rate, k_start, k_len, dtype="float32"):
    """Inverted-dropout factors (B, Hkv, G, q, k_len) of keys ``k_start + [0,
    k_len)`` for ``rows`` from ``dropout_rows``: ``1 / (1 - rate)`` where the
    weight is kept, 0 where it is dropped; they multiply the softmax weights."""
    kv = ops.arange(k_len, dtype="int32") + k_start  # (k,)
    keep = keep_mask(rows, kv, keep_threshold(rate))  # (B, Hkv, G, q, k)
    scale = ops.convert_to_tensor(1.0 / (1.0 - rate), dtype)
    return ops.where(keep, scale, ops.zeros_like(scale))
