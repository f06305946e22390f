"""Greedy and beam-search decoding over a decoder step function.

The decoder-step interface is one callable:

    step(tokens (N,) int32, states: list) -> (log_probs (N, V), new_states: list)

``tokens`` are the tokens chosen at the previous step (the start token at the
first), ``states`` a list of tensors whose first axis is the batch N, and
``log_probs`` the model's log-probabilities of the next token. Any decoder
fits: for ``AttentionRNNCell`` the states are ``cell.get_initial_state(memory=...)``
and the step embeds the tokens, calls the cell and projects to the vocabulary
(``cell_step`` builds this). Both decoders run in a ``keras.ops.while_loop``
(traced by JAX and TensorFlow, a Python loop on PyTorch) with fixed shapes, and
stop once every sequence has emitted ``end_token`` or ``max_length`` tokens.

Scores are sums of log-probabilities, the end token included; after the end
token, sequences are padded with ``end_token``.
"""

from __future__ import annotations

from keras import ops

from attnkit import _checks

_NEG = -1e9


def _check(max_length, end_token, beam_width=1, length_penalty=0.0):
    _checks.positive_int(max_length, "max_length")
    _checks.non_negative_int(end_token, "end_token")
    _checks.positive_int(beam_width, "beam_width")
    _checks.non_negative_number(length_penalty, "length_penalty")


def cell_step(cell, embedding, projection):
    """The step of a decoder made of `embedding` -> `cell` -> `projection`.

    `projection` maps the cell output to logits or probabilities over the
    vocabulary; its log-softmax is returned (log of probabilities when its
    activation is softmax). With `alignment_history`, the alignment part of
    the output is dropped before the projection. Unbuilt layers are built
    here, outside the traced loop (JAX cannot create weights inside it; a
    hand-written step must likewise use built layers).
    """
    if not embedding.built:
        embedding.build((None,))
    if not cell.built:
        cell.build((None, embedding.output_dim))
    if not projection.built:
        size = cell.output_size
        if getattr(cell, "alignment_history", False):
            size -= cell.memory_shape[0]
        projection.build((None, size))

    def step(tokens, states):
        x = embedding(tokens)  # (N, E)
        output, states = cell(x, states)
        if getattr(cell, "alignment_history", False):
            output = cell.split_output(output)[0]
        logits = ops.cast(projection(output), "float32")  # (N, V)
        if (
            getattr(projection, "activation", None) is not None
            and getattr(projection.activation, "__name__", "") == "softmax"
        ):
            return ops.log(ops.maximum(logits, 1e-30)), list(states)
        return ops.log_softmax(logits, axis=-1), list(states)

    return step


def greedy_decode(step, initial_states, *, start_token, end_token, max_length):
    """Greedy decoding: the most probable token at every step.

    Args:
        step: the decoder step (see the module docstring).
        initial_states: list of tensors (B, ...).
        start_token: id fed at the first step.
        end_token: id that ends a sequence.
        max_length: the most tokens generated.

    Returns:
        `(tokens (B, max_length) int32, scores (B,) float32, lengths (B,) int32)`.
    """
    _check(max_length, end_token)
    states = list(initial_states)
    batch = ops.shape(states[0])[0]
    tokens = ops.full((batch,), start_token, dtype="int32")
    seq = ops.full((batch, max_length), end_token, dtype="int32")
    scores = ops.zeros((batch,), "float32")
    lengths = ops.zeros((batch,), "int32")
    finished = ops.zeros((batch,), "bool")
    positions = ops.arange(max_length, dtype="int32")[None, :]  # (1, L)

    def cond(t, tokens, states, seq, scores, lengths, finished):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, tokens, states, seq, scores, lengths, finished):
        log_probs, states = step(tokens, list(states))
        log_probs = ops.cast(log_probs, "float32")  # (B, V)
        chosen = ops.cast(ops.argmax(log_probs, axis=-1), "int32")  # (B,)
        chosen = ops.where(finished, ops.full_like(chosen, end_token), chosen)
        gained = ops.take_along_axis(log_probs, chosen[:, None], axis=-1)[:, 0]
        scores = scores + ops.where(finished, ops.zeros_like(gained), gained)
        lengths = lengths + ops.cast(ops.logical_not(finished), "int32")
        seq = ops.where(positions == t, chosen[:, None], seq)
        finished = ops.logical_or(finished, chosen == end_token)
        return t + 1, chosen, list(states), seq, scores, lengths, finished

    result = ops.while_loop(
        cond,
        body,
        (
            ops.convert_to_tensor(0, "int32"),
            tokens,
            states,
            seq,
            scores,
            lengths,
            finished,
        ),
        maximum_iterations=max_length,
    )
    return result[3], result[4], result[5]


def _penalty(lengths, alpha):
    # Wu et al. 2016 (GNMT): lp(Y) = ((5 + |Y|) / 6) ** alpha
    return ops.power((5.0 + ops.cast(lengths, "float32")) / 6.0, alpha)


def beam_search(
    step,
    initial_states,
    *,
    start_token,
    end_token,
    max_length,
    beam_width,
    length_penalty=0.0,
    keep_greedy=True,
):
    """Beam search: keeps the `beam_width` best prefixes at every step.

    Candidates are ranked by `score / lp(length)` with the GNMT length
    penalty `lp = ((5 + length) / 6) ** length_penalty` (no penalty at 0). A
    finished hypothesis stays in the beam with its score. Width 1 is greedy
    decoding. Beam search alone is a heuristic: a wider beam usually, but not
    provably, finds a sequence at least as probable as greedy's (the greedy
    prefix can fall out of the beam). With `keep_greedy` (the default) the
    greedy hypothesis is decoded too and the better-ranked of the two is
    returned, so widening the beam never gives a lower-ranked result.

    Args:
        step: the decoder step (see the module docstring).
        initial_states: list of tensors (B, ...), tiled over the beams here.
        start_token: id fed at the first step.
        end_token: id that ends a sequence.
        max_length: the most tokens generated.
        beam_width: K, the number of hypotheses kept.
        length_penalty: GNMT's alpha. Defaults to `0.0`.
        keep_greedy: also decode greedily and return greedy's hypothesis
            where it ranks higher. Defaults to `True`.

    Returns:
        The best hypothesis per example: `(tokens (B, max_length) int32,
        scores (B,) float32 (log-probability, unpenalised), lengths (B,) int32)`.
    """
    _check(max_length, end_token, beam_width, length_penalty)
    k = beam_width
    states = [ops.repeat(s, k, axis=0) for s in initial_states]  # (B·K, ...)
    batch = ops.shape(initial_states[0])[0]
    tokens = ops.full((batch * k,), start_token, dtype="int32")
    first = ops.cast(ops.arange(k) == 0, "float32")  # only beam 0 is live at first
    scores = ops.zeros((batch, k), "float32") + (1.0 - first)[None, :] * _NEG  # (B, K)
    seq = ops.full((batch, k, max_length), end_token, dtype="int32")
    lengths = ops.zeros((batch, k), "int32")
    finished = ops.zeros((batch, k), "bool")
    positions = ops.arange(max_length, dtype="int32")[None, None, :]  # (1, 1, L)
    offsets = (ops.arange(batch, dtype="int32") * k)[:, None]  # (B, 1)

    def cond(t, tokens, states, seq, scores, lengths, finished):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, tokens, states, seq, scores, lengths, finished):
        log_probs, states = step(tokens, list(states))
        vocab = log_probs.shape[-1]
        log_probs = ops.reshape(ops.cast(log_probs, "float32"), (batch, k, vocab))  # (B, K, V)
        end_only = ops.where(ops.arange(vocab) == end_token, 0.0, _NEG)  # (V,)
        log_probs = ops.where(finished[..., None], end_only[None, None, :], log_probs)
        total = scores[..., None] + log_probs  # (B, K, V)
        cand_len = lengths + ops.cast(ops.logical_not(finished), "int32")  # (B, K)
        rank = total
        if length_penalty:
            rank = total / _penalty(cand_len, length_penalty)[..., None]
        _, index = ops.top_k(ops.reshape(rank, (batch, k * vocab)), k)  # (B, K)
        index = ops.cast(index, "int32")
        parent = index // vocab
        chosen = index % vocab
        scores = ops.take_along_axis(ops.reshape(total, (batch, k * vocab)), index, axis=1)
        lengths = ops.take_along_axis(cand_len, parent, axis=1)
        was_finished = ops.take_along_axis(finished, parent, axis=1)
        seq = ops.take_along_axis(seq, ops.repeat(parent[..., None], max_length, axis=2), axis=1)
        write = ops.logical_and(positions == t, ops.logical_not(was_finished)[..., None])
        seq = ops.where(write, chosen[..., None], seq)
        finished = ops.logical_or(was_finished, chosen == end_token)
        rows = ops.reshape(offsets + parent, (-1,))  # (B·K,)
        states = [ops.take(s, rows, axis=0) for s in states]
        return t + 1, ops.reshape(chosen, (-1,)), states, seq, scores, lengths, finished

    result = ops.while_loop(
        cond,
        body,
        (
            ops.convert_to_tensor(0, "int32"),
            tokens,
            states,
            seq,
            scores,
            lengths,
            finished,
        ),
        maximum_iterations=max_length,
    )
    seq, scores, lengths = result[3], result[4], result[5]
    rank = scores / _penalty(lengths, length_penalty) if length_penalty else scores
    best = ops.cast(ops.argmax(rank, axis=-1), "int32")[:, None]  # (B, 1)
    best_seq = ops.take_along_axis(seq, ops.repeat(best[..., None], max_length, axis=2), axis=1)
    best_seq = best_seq[:, 0]  # (B, L)
    best_score = ops.take_along_axis(scores, best, axis=1)[:, 0]
    best_len = ops.take_along_axis(lengths, best, axis=1)[:, 0]
    if not keep_greedy or k == 1:
        return best_seq, best_score, best_len
    g_seq, g_score, g_len = greedy_decode(
        step, initial_states, start_token=start_token, end_token=end_token, max_length=max_length
    )
    if length_penalty:
        beam_wins = best_score / _penalty(best_len, length_penalty) >= g_score / _penalty(
            g_len, length_penalty
        )
    else:
        beam_wins = best_score >= g_score
    return (
        ops.where(beam_wins[:, None], best_seq, g_seq),
        ops.where(beam_wins, best_score, g_score),
        ops.where(beam_wins, best_len, g_len),
    )
