"""attnkit.sampling and sample_decode: NumPy references, distributions, greedy limits,
the same tokens on every backend (checked-in expectations), errors."""

import keras
import numpy as np
import pytest
from keras import ops

from attnkit import sampling
from attnkit.decoding import greedy_decode, sample_decode

END = 0


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x))


# -- NumPy references -----------------------------------------------------------


def _np_mix(x):
    x = np.asarray(x, np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def np_uniform(seed, step, n, v):
    """attnkit.sampling.uniform in NumPy uint32 arithmetic."""
    with np.errstate(over="ignore"):
        seed = np.broadcast_to(np.asarray(seed, np.int64) & 0xFFFFFFFF, (n,)).astype(np.uint32)
        key = _np_mix(_np_mix(seed) ^ np.uint32(step))[:, None]
        rows = np.arange(n, dtype=np.uint32)[:, None] * np.uint32(0x2545F491)
        key = _np_mix(key ^ rows)
        tokens = np.arange(v, dtype=np.uint32)[None, :] * np.uint32(0x9E3779B)
        key = _np_mix(key ^ tokens)
    return ((key >> np.uint32(8)).astype(np.float64) + 0.5) / 2**24


def np_filter(logits, temperature=1.0, top_k=None, top_p=None):
    """The kept set (bool) and the renormalised probabilities, in float64."""
    logits = np.asarray(logits, np.float64)
    n, v = logits.shape
    if temperature == 0:
        keep = np.arange(v)[None, :] == logits.argmax(-1)[:, None]
        return keep, keep.astype(np.float64)
    z = logits / temperature
    keep = np.ones_like(z, bool)
    if top_k is not None and top_k < v:
        kth = np.sort(z, -1)[:, ::-1][:, top_k - 1 : top_k]
        keep = z >= kth
    probs = np.where(keep, np.exp(z - z.max(-1, keepdims=True)), 0.0)
    probs /= probs.sum(-1, keepdims=True)
    if top_p is not None and top_p < 1:
        for i in range(n):
            order = np.argsort(-probs[i], kind="stable")
            before = np.cumsum(probs[i][order]) - probs[i][order]
            last = order[np.flatnonzero(before < top_p)[-1]]
            keep[i] &= probs[i] >= probs[i][last]
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(-1, keepdims=True)
    return keep, probs


def np_sample(logits, seed, step, **kwargs):
    """sample_tokens in NumPy: Gumbel-max over the filtered log-probabilities."""
    keep, probs = np_filter(logits, **kwargs)
    if kwargs.get("temperature", 1.0) == 0:
        return probs.argmax(-1)
    u = np_uniform(seed, step, *probs.shape)
    noisy = np.where(keep, np.log(np.where(keep, probs, 1.0)) - np.log(-np.log(u)), -np.inf)
    return noisy.argmax(-1)


LOGITS = np.random.default_rng(7).normal(scale=2.0, size=(6, 12)).astype("float32")


def test_uniform_matches_numpy_hash():
    got = to_np(sampling.uniform(123456789, 5, np.zeros((6, 12), "float32")))
    np.testing.assert_array_equal(got, np_uniform(123456789, 5, 6, 12).astype("float32"))
    per_row = np.array([3, 1, 4, 1, 5, 9], "int32")
    got = to_np(sampling.uniform(ops.convert_to_tensor(per_row), 2, np.zeros((6, 12))))
    want = np.stack([np_uniform(s, 2, 6, 12)[i] for i, s in enumerate(per_row)])
    np.testing.assert_array_equal(got, want.astype("float32"))
    assert 0 < got.min() and got.max() < 1


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0, 2.5])
@pytest.mark.parametrize(
    "top_k,top_p",
    [
        (None, None),
        (1, None),
        (4, None),
        (12, 0.9),
        (None, 0.3),
        (None, 0.75),
        (5, 0.6),
        (None, 1.0),
    ],
)
def test_filter_matches_numpy(temperature, top_k, top_p):
    got = to_np(
        sampling.filter_log_probs(LOGITS, temperature=temperature, top_k=top_k, top_p=top_p)
    )
    keep, probs = np_filter(LOGITS, temperature, top_k, top_p)
    np.testing.assert_array_equal(got > -1e8, keep)
    np.testing.assert_allclose(np.exp(got.astype(np.float64)), probs, atol=1e-6)
    assert np.all(np.isfinite(got))
    if top_k is not None:
        assert np.all(keep.sum(-1) <= top_k)
    if top_p is not None and temperature > 0:
        # Non-vacuous: the kept mass reaches top_p, and dropping the least probable
        # kept token would fall below it (within rounding of the prefix sums).
        _, full = np_filter(LOGITS, temperature, top_k, None)
        mass = np.where(keep, full, 0).sum(-1)
        least = np.where(keep, full, np.inf).min(-1)
        assert np.all(mass >= min(top_p, 1.0) - 1e-9)
        assert np.all(mass - least < top_p + 1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(temperature=0.7), dict(top_k=3), dict(top_p=0.6), dict(top_k=4, top_p=0.8)],
)
def test_sample_tokens_match_numpy_and_stay_in_the_kept_set(kwargs):
    for step in (0, 3):
        got = to_np(sampling.sample_tokens(LOGITS, 42, step, **kwargs))
        np.testing.assert_array_equal(got, np_sample(LOGITS, 42, step, **kwargs))
    # 4000 rows of the same logits: frequencies against the filtered distribution.
    rows = np.tile(LOGITS[1:2], (4000, 1))
    got = to_np(sampling.sample_tokens(rows, 9, 0, **kwargs))
    keep, probs = np_filter(LOGITS[1:2], **kwargs)
    assert np.all(keep[0][got]), "sampled outside the kept set"
    freq = np.bincount(got, minlength=12) / len(got)
    bound = 4.5 * np.sqrt(probs[0] * (1 - probs[0]) / len(got)) + 1e-3
    assert np.all(np.abs(freq - probs[0]) <= bound), (freq, probs[0])


# -- sample_decode over a table step ----------------------------------------------

# Tokens: 0 end, 1 start, 2..7 words; a spread distribution so that seeds matter.
_rng = np.random.default_rng(3)
TABLE = np.exp(_rng.normal(scale=1.0, size=(8, 8)))
TABLE[:, 1] = 1e-3  # start is almost never produced
TABLE[0] = 1e-6
TABLE[0, 0] = 1.0
TABLE /= TABLE.sum(1, keepdims=True)
LOG_TABLE = np.log(TABLE).astype("float32")


def _table_step(tokens, states):
    return ops.take(ops.convert_to_tensor(LOG_TABLE), tokens, axis=0), states


STATES = [np.zeros((5, 1), "float32")]
KW = dict(start_token=1, end_token=END, max_length=7)


def np_sample_decode(seed, batch=5, **kwargs):
    tokens = np.full(batch, 1)
    out = np.full((batch, KW["max_length"]), END)
    scores, lengths, done = np.zeros(batch), np.zeros(batch, int), np.zeros(batch, bool)
    for t in range(KW["max_length"]):
        if done.all():
            break
        logits = LOG_TABLE[tokens]
        chosen = np.where(done, END, np_sample(logits, seed, t, **kwargs))
        scores += np.where(done, 0.0, logits[np.arange(batch), chosen])
        lengths += ~done
        out[:, t] = chosen
        done |= chosen == END
        tokens = chosen
    return out, scores, lengths


@pytest.mark.parametrize("kwargs", [dict(), dict(temperature=0.5, top_k=3, top_p=0.7)])
def test_sample_decode_matches_numpy_loop(kwargs):
    tokens, scores, lengths = sample_decode(_table_step, STATES, seed=11, **KW, **kwargs)
    want_tokens, want_scores, want_lengths = np_sample_decode(11, **kwargs)
    np.testing.assert_array_equal(to_np(tokens), want_tokens)
    np.testing.assert_allclose(to_np(scores), want_scores, rtol=1e-5)
    np.testing.assert_array_equal(to_np(lengths), want_lengths)


def test_seeds_reproduce_and_differ():
    def draw(seed, step, logits=LOGITS):
        return to_np(sampling.sample_tokens(logits, seed, step, top_k=8))

    np.testing.assert_array_equal(draw(5, 0), draw(5, 0))
    assert not np.array_equal(draw(5, 0), draw(6, 0))  # another seed
    assert not np.array_equal(draw(5, 0), draw(5, 1))  # another step
    assert len(set(draw(5, 0, np.tile(LOGITS[:1], (6, 1))))) > 1  # rows draw their own noise


def test_temperature_zero_and_top_k_one_are_greedy():
    g_tokens, g_scores, g_lengths = greedy_decode(_table_step, STATES, **KW)
    for kwargs in (dict(temperature=0), dict(temperature=1e-5)):
        tokens, scores, lengths = sample_decode(_table_step, STATES, seed=0, **KW, **kwargs)
        np.testing.assert_array_equal(to_np(tokens), to_np(g_tokens))
        np.testing.assert_allclose(to_np(scores), to_np(g_scores), rtol=1e-6)
        np.testing.assert_array_equal(to_np(lengths), to_np(g_lengths))
    # The limit is not vacuous: the table's top two differ by far more than 1e-5 · 30.
    top2 = np.sort(LOG_TABLE, 1)[:, -2:]
    assert np.all(top2[:, 1] - top2[:, 0] > 1e-3)
    greedy = LOGITS.argmax(-1)
    for kwargs in (dict(temperature=0), dict(top_k=1), dict(top_p=1e-6), dict(temperature=1e-5)):
        np.testing.assert_array_equal(to_np(sampling.sample_tokens(LOGITS, 3, **kwargs)), greedy)


# Generated once on torch (`_current()`), and checked to hold on jax, torch and
# tensorflow: the counter-based noise makes the draws backend-independent.
EXPECTED_TOKENS = {
    "plain": [0, 2, 10, 9, 1, 6],
    "t0.5_k3": [7, 3, 10, 8, 1, 6],
    "p0.7": [7, 0, 10, 8, 1, 6],
    "k4_p0.8_t1.3": [7, 0, 10, 8, 1, 6],
}
EXPECTED_DECODE = {
    "tokens": [
        [3, 0, 0, 0, 0, 0, 0],
        [4, 2, 5, 7, 2, 2, 2],
        [7, 0, 0, 0, 0, 0, 0],
        [3, 2, 0, 0, 0, 0, 0],
        [3, 2, 5, 0, 0, 0, 0],
    ],
    "scores": [
        -4.656127452850342,
        -11.237496376037598,
        -3.861372947692871,
        -4.62806510925293,
        -5.635857105255127,
    ],
    "lengths": [2, 7, 2, 3, 4],
}


def _cross_backend_cases():
    return {
        "plain": dict(),
        "t0.5_k3": dict(temperature=0.5, top_k=3),
        "p0.7": dict(top_p=0.7),
        "k4_p0.8_t1.3": dict(top_k=4, top_p=0.8, temperature=1.3),
    }


def _current():
    tokens = {
        name: to_np(sampling.sample_tokens(LOGITS, 2026, 1, **kw)).tolist()
        for name, kw in _cross_backend_cases().items()
    }
    t, s, n = sample_decode(_table_step, STATES, seed=2026, top_p=0.9, temperature=1.2, **KW)
    decode = {
        "tokens": to_np(t).tolist(),
        "scores": to_np(s).tolist(),
        "lengths": to_np(n).tolist(),
    }
    return tokens, decode


def test_same_tokens_on_every_backend():
    tokens, decode = _current()
    assert tokens == EXPECTED_TOKENS, keras.backend.backend()
    assert decode["tokens"] == EXPECTED_DECODE["tokens"]
    assert decode["lengths"] == EXPECTED_DECODE["lengths"]
    np.testing.assert_allclose(decode["scores"], EXPECTED_DECODE["scores"], rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="`temperature` must be .* Received: temperature=-1"):
        sampling.sample_tokens(LOGITS, 0, temperature=-1)
    with pytest.raises(ValueError, match="Received: temperature=inf"):
        sample_decode(_table_step, STATES, seed=0, temperature=float("inf"), **KW)
    with pytest.raises(ValueError, match="`top_k` must be .* Received: top_k=0"):
        sample_decode(_table_step, STATES, seed=0, top_k=0, **KW)
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"`top_p` must be .*\(0, 1\].* top_p={bad}"):
            sampling.filter_log_probs(LOGITS, top_p=bad)
    with pytest.raises(ValueError, match="`seed` must be an integer. Received: seed=None"):
        sample_decode(_table_step, STATES, seed=None, **KW)
    with pytest.raises(ValueError, match="Received: seed='a'"):
        sample_decode(_table_step, STATES, seed="a", **KW)
    with pytest.raises(ValueError, match="Received: max_length=0"):
        sample_decode(_table_step, STATES, seed=0, start_token=1, end_token=END, max_length=0)
