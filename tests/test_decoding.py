"""greedy_decode and beam_search: hand-made step tables and an AttentionRNNCell decoder."""

import keras
import numpy as np
import pytest
from keras import ops

from attnkit.decoding import beam_search, cell_step, greedy_decode
from attnkit.layers import AttentionRNNCell, BahdanauAttention

END = 0


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _table_step(table):
    """A step whose log-probs depend only on the previous token: table (V, V)."""
    log_table = ops.convert_to_tensor(np.log(table).astype("float32"))

    def step(tokens, states):
        return ops.take(log_table, tokens, axis=0), states

    return step


# Tokens: 0 = end, 1 = start, 2 = a, 3 = b. From start: a 0.5, b 0.4, end 0.1.
# After a: end 0.3, a 0.35, b 0.35 (spread); after b: end 0.9.
TABLE = np.array(
    [
        [0.97, 0.01, 0.01, 0.01],
        [0.1, 0.0001, 0.5, 0.3999],
        [0.3, 0.0001, 0.35, 0.3499],
        [0.9, 0.0001, 0.05, 0.0499],
    ]
)


def test_hand_computed_greedy_and_beam():
    states = [np.zeros((1, 1), "float32")]
    tokens, score, length = greedy_decode(
        _table_step(TABLE), states, start_token=1, end_token=END, max_length=4
    )
    # greedy: a (0.5), a (0.35), a (0.35), a (0.35): never ends within 4.
    np.testing.assert_array_equal(to_np(tokens), [[2, 2, 2, 2]])
    np.testing.assert_allclose(to_np(score), np.log([0.5 * 0.35**3]), rtol=1e-5)
    np.testing.assert_array_equal(to_np(length), [4])
    tokens, score, length = beam_search(
        _table_step(TABLE),
        states,
        start_token=1,
        end_token=END,
        max_length=4,
        beam_width=2,
    )
    # beam 2 keeps b (0.4) and finds b, end = 0.36 > every length-4 greedy continuation.
    np.testing.assert_array_equal(to_np(tokens), [[3, 0, 0, 0]])
    np.testing.assert_allclose(to_np(score), np.log([TABLE[1, 3] * TABLE[3, 0]]), rtol=1e-5)
    np.testing.assert_array_equal(to_np(length), [2])


def _decoder(seed, vocab=6):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    memory = rng.normal(size=(3, 5, 4)).astype("float32")
    cell = AttentionRNNCell(keras.layers.GRUCell(8), BahdanauAttention(6), attention_layer_size=8)
    states = cell.get_initial_state(memory=memory)
    embedding = keras.layers.Embedding(vocab, 4)
    projection = keras.layers.Dense(
        vocab, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0)
    )
    return cell_step(cell, embedding, projection), states, cell


def _python_greedy(step, states, max_length):
    tokens = np.full((3,), 1, "int32")
    out, total, done = [], np.zeros(3), np.zeros(3, bool)
    for _ in range(max_length):
        lp, states = step(ops.convert_to_tensor(tokens), states)
        lp = to_np(lp)
        tok = np.where(done, END, lp.argmax(-1))
        total += np.where(done, 0, lp[np.arange(3), tok])
        out.append(tok)
        done |= tok == END
        tokens = tok.astype("int32")
    return np.stack(out, 1), total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_python_loop_and_beam_properties(seed):
    step, states, _ = _decoder(seed)
    tokens, scores, lengths = greedy_decode(
        step, states, start_token=1, end_token=END, max_length=6
    )
    want_tokens, want_scores = _python_greedy(step, states, 6)
    np.testing.assert_array_equal(to_np(tokens), want_tokens)
    np.testing.assert_allclose(to_np(scores), want_scores, rtol=1e-5)
    b_tokens, b_scores, b_lengths = beam_search(
        step, states, start_token=1, end_token=END, max_length=6, beam_width=1
    )
    np.testing.assert_array_equal(to_np(b_tokens), to_np(tokens))
    np.testing.assert_allclose(to_np(b_scores), to_np(scores), rtol=1e-5)
    np.testing.assert_array_equal(to_np(b_lengths), to_np(lengths))
    _, wide, _ = beam_search(step, states, start_token=1, end_token=END, max_length=6, beam_width=4)
    assert np.all(to_np(wide) >= to_np(scores) - 1e-5)


def test_length_penalty_runs_and_errors():
    step, states, _ = _decoder(0)
    tokens, _, lengths = beam_search(
        step,
        states,
        start_token=1,
        end_token=END,
        max_length=5,
        beam_width=3,
        length_penalty=0.6,
    )
    assert to_np(tokens).shape == (3, 5) and np.all(to_np(lengths) <= 5)
    with pytest.raises(ValueError, match="Received: max_length=0"):
        greedy_decode(step, states, start_token=1, end_token=END, max_length=0)
    with pytest.raises(ValueError, match="Received: beam_width=0"):
        beam_search(step, states, start_token=1, end_token=END, max_length=3, beam_width=0)
    with pytest.raises(ValueError, match="Received: length_penalty=-1"):
        beam_search(
            step,
            states,
            start_token=1,
            end_token=END,
            max_length=3,
            beam_width=2,
            length_penalty=-1,
        )
    with pytest.raises(ValueError, match="Received: end_token=-1"):
        greedy_decode(step, states, start_token=1, end_token=-1, max_length=3)


# A table where greedy's hypothesis falls out of a width-2 beam. Tokens: 0 end,
# 1 start, 2 a, 3 b, 4 c, 5 d, 6 e, 7 h, 8 j, 9 x, 10 y. Greedy: a (.34), d (.4),
# end (1) = .136. The beam keeps b.e (.3015) and a.d (.136) at step 2, then
# b.e.h and b.e.j (.15075 each) push a.d.end out at step 3, and both decay to
# .1281 at length 4, below greedy.
TRAP = np.full((11, 11), 1e-6)
for row, probs in {
    0: {0: 1.0},
    1: {2: 0.34, 3: 0.335, 4: 0.325},
    2: {5: 0.4, 9: 0.3, 10: 0.3},
    3: {6: 0.9, 0: 0.1},
    4: {0: 1.0},
    5: {0: 1.0},
    6: {7: 0.5, 8: 0.5},
    7: {7: 0.85, 0: 0.15},
    8: {8: 0.85, 0: 0.15},
    9: {0: 1.0},
    10: {0: 1.0},
}.items():
    for col, p in probs.items():
        TRAP[row, col] = p
TRAP /= TRAP.sum(axis=1, keepdims=True)


def test_beam_never_ranks_below_greedy_with_keep_greedy():
    step, states = _table_step(TRAP), [np.zeros((1, 1), "float32")]
    kwargs = dict(start_token=1, end_token=END, max_length=4)
    g_tokens, g_score, _ = greedy_decode(step, states, **kwargs)
    np.testing.assert_array_equal(to_np(g_tokens), [[2, 5, 0, 0]])
    _, plain, _ = beam_search(step, states, beam_width=2, keep_greedy=False, **kwargs)
    assert to_np(plain)[0] < to_np(g_score)[0]  # plain beam search falls below greedy here
    tokens, score, length = beam_search(step, states, beam_width=2, **kwargs)
    np.testing.assert_array_equal(to_np(tokens), to_np(g_tokens))
    np.testing.assert_allclose(to_np(score), to_np(g_score), rtol=1e-6)
    np.testing.assert_array_equal(to_np(length), [3])


@pytest.mark.parametrize(
    "target", [b for b in ("jax", "torch", "tensorflow") if b != keras.backend.backend()]
)
def test_decoding_is_identical_on_every_backend(target):
    """Same weights, same memory: the same tokens and scores on each backend."""
    import json
    import os
    import subprocess
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "scripts"))
    import decode_check

    here = decode_check.run()
    env = dict(os.environ, KERAS_BACKEND=target, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, decode_check.__file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(there) == set(here) == {"bahdanau", "location_sensitive", "monotonic_hard"}
    for name in here:
        for kind in ("greedy", "beam"):
            a, b = here[name][kind], there[name][kind]
            assert a["tokens"] == b["tokens"], (name, kind, target)
            assert a["lengths"] == b["lengths"], (name, kind, target)
            np.testing.assert_allclose(b["scores"], a["scores"], rtol=1e-5, atol=1e-5)
