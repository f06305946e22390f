"""Seeded token sampling that gives the same tokens on every backend.

``filter_log_probs`` turns a model's logits (or log-probabilities) into the
distribution that is sampled: temperature, then top-k, then top-p (nucleus),
each renormalising what the previous one kept, as in Holtzman et al. 2019
and Hugging Face's ``generate``:

1. temperature ``T``: ``logits / T``; ``T = 0`` is the argmax (greedy);
2. top-k: keep the tokens whose logit is at least the k-th largest (ties at
   the k-th value are all kept);
3. top-p: with the kept tokens' probabilities sorted in decreasing order
   ``p_(1) >= p_(2) >= ...``, keep rank ``i`` while ``p_(1) + ... + p_(i-1) < p``
   (the smallest prefix whose mass reaches ``p``), and every token as
   probable as the last one kept (so the set does not depend on how a sort
   orders ties). ``top_p = 1`` keeps every token.

``sample_tokens`` draws from that distribution with the Gumbel-max trick,
``argmax(log_probs + g)``, ``g = -log(-log(u))``, where ``u`` comes from a
counter-based generator: a hash of the seed, the step, the row and the token
index (the ``lowbias32`` mixer of ``attnkit.ops.counter_noise``, 32-bit
integer arithmetic in ``keras.ops``). The noise is a pure function of those
integers, so it can be drawn inside any traced loop, and the same seed gives
the same noise, bit for bit, on JAX, PyTorch and TensorFlow.
"""

from __future__ import annotations

from keras import ops

from attnkit import _checks
from attnkit.ops.counter_noise import _i32, _mix, _shift_right

_NEG = -1e9  # excluded tokens' log-probability: finite, so no NaN downstream
_ROW = 0x2545F491  # odd multipliers that spread the row and token indices
_TOKEN = 0x9E3779B


def check_sampling(temperature=1.0, top_k=None, top_p=None):
    """Validates the sampling arguments; returns them normalised."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not temperature >= 0
        or temperature == float("inf")
    ):
        _checks._fail("temperature", "a finite number >= 0 (0 is greedy)", temperature)
    top_k = _checks.positive_int(top_k, "top_k", allow_none=True)
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        _checks._fail("top_p", "a number in (0, 1] or None", top_p)
    return float(temperature), top_k, None if top_p is None else float(top_p)


def filter_log_probs(logits, *, temperature=1.0, top_k=None, top_p=None):
    """The log-probabilities sampled from, (N, V) float32.

    Args:
        logits: (N, V) logits or log-probabilities.
        temperature: `T >= 0`; 0 puts all the mass on the argmax. Defaults to `1.0`.
        top_k: keep the `top_k` most probable tokens, or `None`. Defaults to `None`.
        top_p: keep the smallest most probable set whose probability
            reaches `top_p` (in (0, 1]), or `None`. Defaults to `None`.

    Returns:
        (N, V) float32 log-probabilities, normalised over the kept tokens;
        every excluded token gets -1e9 (finite, so sums and products of
        them stay NaN-free).
    """
    temperature, top_k, top_p = check_sampling(temperature, top_k, top_p)
    logits = ops.cast(logits, "float32")
    vocab = logits.shape[-1]
    if temperature == 0:
        best = ops.argmax(logits, axis=-1)  # (N,)
        return ops.where(ops.arange(vocab)[None, :] == best[:, None], 0.0, _NEG)
    logits = logits / temperature
    keep = ops.ones_like(logits, dtype="bool")  # (N, V)
    if top_k is not None and top_k < vocab:
        kth = ops.top_k(logits, top_k)[0][:, -1:]  # (N, 1)
        keep = logits >= kth
    log_probs = _log_softmax_where(logits, keep)
    if top_p is not None and top_p < 1:
        probs = ops.exp(log_probs)  # (N, V), 0 where excluded
        ordered = -ops.sort(-probs, axis=-1)  # (N, V), decreasing
        before = ops.cumsum(ordered, axis=-1) - ordered  # mass of the more probable ranks
        smallest = ops.min(ops.where(before < top_p, ordered, 2.0), axis=-1, keepdims=True)
        keep = ops.logical_and(keep, probs >= smallest)
        log_probs = _log_softmax_where(logits, keep)
    return log_probs


def _log_softmax_where(logits, keep):
    masked = ops.where(keep, logits, _NEG)
    return ops.where(keep, ops.log_softmax(masked, axis=-1), _NEG)


def uniform(seed, step, shape_like):
    """Counter-based uniforms in (0, 1), (N, V) float32, like ``shape_like``.

    Element (i, j) is a hash of `(seed, step, i, j)`: `seed` a Python int or
    an (N,) int32 tensor of per-row seeds, `step` an int or int32 scalar.
    """
    if isinstance(seed, int) and not isinstance(seed, bool):
        seed = _i32(((seed & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000)  # as a signed int32
    else:
        seed = ops.cast(seed, "int32")
    key = _mix(ops.bitwise_xor(_mix(seed), ops.cast(step, "int32")))  # () or (N,)
    ones = ops.ones_like(shape_like, dtype="int32")  # (N, V)
    rows = ops.cumsum(ones, axis=0) - 1  # (N, V): 0, 1, ... down the rows
    tokens = ops.cumsum(ones, axis=1) - 1  # (N, V): 0, 1, ... along the vocabulary
    if len(key.shape) == 1:
        key = key[:, None]
    key = _mix(ops.bitwise_xor(key, ops.multiply(rows, _i32(_ROW))))
    key = _mix(ops.bitwise_xor(key, ops.multiply(tokens, _i32(_TOKEN))))
    bits = _shift_right(key, 8)  # 24 random bits
    return (ops.cast(bits, "float32") + 0.5) / float(1 << 24)


def sample_tokens(logits, seed, step=0, *, temperature=1.0, top_k=None, top_p=None):
    """One token per row, drawn from ``filter_log_probs(logits, ...)``.

    Args:
        logits: (N, V) logits or log-probabilities.
        seed: a Python int (any size; taken modulo 2**32), or an (N,)
            int32 tensor of per-row seeds.
        step: the decoding step (an int or int32 scalar): each step draws
            fresh noise. Defaults to `0`.
        temperature: as in `filter_log_probs`. Defaults to `1.0`.
        top_k: as in `filter_log_probs`. Defaults to `None`.
        top_p: as in `filter_log_probs`. Defaults to `None`.

    Returns:
        (N,) int32 tokens. The same arguments give the same tokens on every
        backend (up to float ties between a logit and its neighbour's plus
        noise, which have probability ~0).
    """
    log_probs = filter_log_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    if temperature == 0:
        return ops.cast(ops.argmax(log_probs, axis=-1), "int32")
    gumbel = -ops.log(-ops.log(uniform(seed, step, log_probs)))  # (N, V)
    return ops.cast(ops.argmax(log_probs + gumbel, axis=-1), "int32")
