"""greedy_decode and beam_search: hand-made step tables and an AttentionRNNCell decoder."""

import keras
import numpy as np
import pytest
from keras import ops

from attnkit.decoding import beam_search, cell_step, coverage_penalty, greedy_decode
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


def test_decoding_is_identical_on_every_backend(next_backend):
    """Same weights, same memory: the same tokens and scores on each backend.

    Greedy, beam search with and without the coverage penalty, and seeded
    top-k/top-p sampling, for three mechanisms.
    """
    target = next_backend  # the three suites of `make test` close the cycle
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
        for kind in ("greedy", "beam", "beam_coverage", "sample"):
            a, b = here[name][kind], there[name][kind]
            assert a["tokens"] == b["tokens"], (name, kind, target)
            assert a["lengths"] == b["lengths"], (name, kind, target)
            np.testing.assert_allclose(b["scores"], a["scores"], rtol=1e-5, atol=1e-5)


# -- coverage penalty (Wu et al. 2016, tensorflow-addons' definition) ----------------


def _aligned_table_step(log_table, align_table):
    """Log-probs and the alignment (the step's state) depend on the fed token only."""
    log_table = ops.convert_to_tensor(np.asarray(log_table, "float32"))
    align_table = ops.convert_to_tensor(np.asarray(align_table, "float32"))

    def step(tokens, states):
        return ops.take(log_table, tokens, axis=0), [ops.take(align_table, tokens, axis=0)]

    step.alignment = lambda states: states[0]
    return step


# Tokens 0 end, 1 start, 2 a, 3 b; two source positions. From start (alignment
# [0.9, 0.1]): end 0.6, a 0.4 - 2e-4; after a (alignment [0.1, 0.9]): end ~1.
COVER = np.array(
    [
        [1.0, 1e-4, 1e-4, 1e-4],
        [0.6, 1e-4, 0.4 - 2e-4, 1e-4],
        [1.0 - 3e-4, 1e-4, 1e-4, 1e-4],
        [1.0 - 3e-4, 1e-4, 1e-4, 1e-4],
    ]
)
COVER_ALIGN = np.array([[0.5, 0.5], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])


def test_hand_computed_coverage_penalty():
    # cp([0.9, 0.1]) = log 0.9 + log 0.1 = -2.408; cp([1.0, 1.0]) = 0; zeros are left out.
    cp = to_np(coverage_penalty(np.array([[0.9, 0.1], [1.0, 1.0], [0.3, 0.0], [2.0, 0.5]])))
    np.testing.assert_allclose(cp, [np.log(0.9 * 0.1), 0.0, np.log(0.3), np.log(0.5)], rtol=1e-6)
    step, states = _aligned_table_step(np.log(COVER), COVER_ALIGN), [np.zeros((1, 2), "float32")]
    kwargs = dict(start_token=1, end_token=END, max_length=3, beam_width=2)
    # Without coverage, "end" (0.6) beats "a end" (0.4).
    tokens, score, length = beam_search(step, states, **kwargs)
    np.testing.assert_array_equal(to_np(tokens), [[0, 0, 0]])
    np.testing.assert_allclose(to_np(score), np.log([0.6]), rtol=1e-5)
    # Step 1 ranks finished "end" at log 0.6 + 1.0 · cp([0.9, 0.1]) = -2.92, below
    # "a end" at log(0.4 - 2e-4) + log(1 - 3e-4) = -0.917 (still unfinished before this
    # step, so unpenalised); the final ranks: "a end" cp([1.0, 1.0]) = 0, "end" -2.92.
    for keep_greedy in (False, True):
        tokens, score, length = beam_search(
            step, states, coverage_penalty_weight=1.0, keep_greedy=keep_greedy, **kwargs
        )
        np.testing.assert_array_equal(to_np(tokens), [[2, 0, 0]])
        np.testing.assert_allclose(to_np(score), np.log([(0.4 - 2e-4) * (1.0 - 3e-4)]), rtol=1e-5)
        np.testing.assert_array_equal(to_np(length), [2])


def np_beam_step(log_probs, scores, lengths, finished, coverage, alignment, end, alpha, beta):
    """tensorflow-addons' _beam_search_step in float64 NumPy (attnkit's length counts
    the end token)."""
    b, k, v = log_probs.shape
    log_probs = np.where(finished[..., None], np.where(np.arange(v) == end, 0.0, -1e9), log_probs)
    total = scores[..., None] + log_probs
    cand_len = lengths + ~finished
    rank = total / (((5.0 + cand_len) / 6.0) ** alpha)[..., None]
    acc = coverage + (~finished)[..., None] * alignment
    cp = np.log(np.minimum(np.where(acc == 0, 1.0, acc), 1.0)).sum(-1) * finished
    rank = rank + beta * cp[..., None]
    index = np.argsort(-rank.reshape(b, -1), axis=1, kind="stable")[:, :k]
    parent, chosen = index // v, index % v
    rows = np.arange(b)[:, None]
    return (
        parent,
        chosen,
        total.reshape(b, -1)[rows, index],
        cand_len[rows, parent],
        finished[rows, parent] | (chosen == end),
        acc[rows, parent],
    )


def test_beam_step_matches_numpy():
    from attnkit.decoding import _beam_step

    rng = np.random.default_rng(5)
    b, k, v, tv = 2, 3, 5, 4
    log_probs = np.log(rng.dirichlet(np.ones(v), size=(b, k)))
    scores = -rng.uniform(0.5, 3.0, size=(b, k))
    lengths = rng.integers(1, 4, size=(b, k))
    finished = np.array([[True, False, False], [False, True, True]])
    coverage = rng.uniform(0.0, 1.2, size=(b, k, tv)) * (rng.uniform(size=(b, k, tv)) > 0.2)
    alignment = rng.dirichlet(np.ones(tv), size=(b, k))
    f32 = lambda x: ops.convert_to_tensor(np.asarray(x, "float32"))  # noqa: E731
    for alpha, beta in ((0.0, 0.0), (0.6, 0.0), (0.0, 0.4), (0.6, 0.4), (1.0, 2.0)):
        got = _beam_step(
            f32(log_probs),
            f32(scores),
            ops.convert_to_tensor(lengths.astype("int32")),
            ops.convert_to_tensor(finished),
            f32(coverage) if beta else None,
            f32(alignment) if beta else None,
            end_token=END,
            length_penalty=alpha,
            coverage_penalty_weight=beta,
        )
        parent, chosen, new_scores, new_lengths, _, new_finished, new_cov = got
        want = np_beam_step(
            log_probs, scores, lengths, finished, coverage, alignment, END, alpha, beta
        )
        np.testing.assert_array_equal(to_np(parent), want[0])
        np.testing.assert_array_equal(to_np(chosen), want[1])
        np.testing.assert_allclose(to_np(new_scores), want[2], rtol=1e-5)
        np.testing.assert_array_equal(to_np(new_lengths), want[3])
        np.testing.assert_array_equal(to_np(new_finished), want[4])
        if beta:
            np.testing.assert_allclose(to_np(new_cov), want[5], rtol=1e-5, atol=1e-6)


# Per-row random 7-token tables with alignments over 4 source positions: row r's
# step reads table r (the row id travels in the state), so rows search differently.
_rng = np.random.default_rng(11)
RAND_TABLE = _rng.dirichlet(np.full(7, 0.6), size=(4, 7))  # (R, V, V)
RAND_TABLE[:, 0] = 1e-6
RAND_TABLE[:, 0, 0] = 1.0
RAND_TABLE /= RAND_TABLE.sum(-1, keepdims=True)
RAND_ALIGN = _rng.dirichlet(np.full(4, 0.5), size=(4, 7))  # (R, V, Tv)


def _row_table_step():
    log_table = ops.convert_to_tensor(np.log(RAND_TABLE).astype("float32"))
    align_table = ops.convert_to_tensor(RAND_ALIGN.astype("float32"))

    def step(tokens, states):
        row = ops.cast(states[0][:, 0], "int32")  # (N,)
        index = row * 7 + tokens
        log_probs = ops.take(ops.reshape(log_table, (-1, 7)), index, axis=0)  # (N, V)
        alignment = ops.take(ops.reshape(align_table, (-1, 4)), index, axis=0)  # (N, Tv)
        return log_probs, [states[0], alignment]

    step.alignment = lambda states: states[1]
    return step


def np_beam_search(k, max_length, alpha, beta, start=1):
    """The whole search over the per-row tables in NumPy with np_beam_step."""
    log_table = np.log(RAND_TABLE.astype("float32").astype(np.float64))
    b = len(RAND_TABLE)
    row_of = np.repeat(np.arange(b), k)
    tokens = np.full(b * k, start)
    scores = np.where(np.arange(k) == 0, 0.0, -1e9)[None].repeat(b, 0)
    lengths = np.zeros((b, k), int)
    finished = np.zeros((b, k), bool)
    coverage = np.zeros((b, k, 4))
    seq = np.full((b, k, max_length), END)
    rows = np.arange(b)[:, None]
    for t in range(max_length):
        if finished.all():
            break
        log_probs = log_table[row_of, tokens].reshape(b, k, -1)
        alignment = RAND_ALIGN[row_of, tokens].reshape(b, k, -1)
        was = finished
        parent, chosen, scores, lengths, finished, coverage = np_beam_step(
            log_probs, scores, lengths, finished, coverage, alignment, END, alpha, beta
        )
        seq = seq[rows, parent]
        seq[:, :, t] = np.where(was[rows, parent], seq[:, :, t], chosen)
        tokens = chosen.reshape(-1)
    cp = np.log(np.minimum(np.where(coverage == 0, 1, coverage), 1)).sum(-1) * finished
    rank = scores / ((5.0 + lengths) / 6.0) ** alpha + beta * cp
    best = rank.argmax(1)
    pick = np.arange(b)
    return seq[pick, best], scores[pick, best], lengths[pick, best]


def test_beam_search_with_coverage_matches_numpy():
    step = _row_table_step()
    states = [np.arange(4, dtype="float32")[:, None], np.zeros((4, 4), "float32")]
    want = np_beam_search(3, 6, 0.6, 0.8)
    got = beam_search(
        step,
        states,
        start_token=1,
        end_token=END,
        max_length=6,
        beam_width=3,
        length_penalty=0.6,
        coverage_penalty_weight=0.8,
        keep_greedy=False,
    )
    np.testing.assert_array_equal(to_np(got[0]), want[0])
    np.testing.assert_allclose(to_np(got[1]), want[1], rtol=1e-5)
    np.testing.assert_array_equal(to_np(got[2]), want[2])
    # The penalty changes some result (beta = 0 is the search the other tests check).
    assert not np.array_equal(np_beam_search(3, 6, 0.6, 0.0)[0], want[0])


def test_coverage_on_a_cell_decoder_and_errors():
    step, states, cell = _decoder(0)
    assert step.alignment == cell.state_alignment  # cell_step hands beam_search the alignment
    kwargs = dict(start_token=1, end_token=END, max_length=5, beam_width=3)
    tokens, scores, lengths = beam_search(
        step, states, coverage_penalty_weight=0.5, keep_greedy=False, **kwargs
    )
    assert to_np(tokens).shape == (3, 5) and np.all(np.isfinite(to_np(scores)))
    with pytest.raises(ValueError, match="`coverage_penalty_weight` must be .* Received: cov"):
        beam_search(step, states, coverage_penalty_weight=-0.1, **kwargs)

    def bare(tokens, states):
        return step(tokens, states)

    with pytest.raises(ValueError, match="`alignment_fn` must be .* Received: alignment_fn=None"):
        beam_search(bare, states, coverage_penalty_weight=0.5, **kwargs)
    with pytest.raises(ValueError, match="Received: alignment_fn=3"):
        beam_search(bare, states, coverage_penalty_weight=0.5, alignment_fn=3, **kwargs)
