"""Greedy, sampling and beam-search decoding over a decoder step function.

The decoder-step interface is one callable:

    step(tokens (N,) int32, states: list) -> (log_probs (N, V), new_states: list)

``tokens`` are the tokens chosen at the previous step (the start token at the
first), ``states`` a list of tensors whose first axis is the batch N, and
``log_probs`` the model's log-probabilities of the next token. Any decoder
fits: for ``AttentionRNNCell`` the states are ``cell.get_initial_state(memory=...)``
and the step embeds the tokens, calls the cell and projects to the vocabulary
(``cell_step`` builds this). The decoders run in a ``keras.ops.while_loop``
(traced by JAX and TensorFlow, a Python loop on PyTorch) with fixed shapes, and
stop once every sequence has emitted ``end_token`` or ``max_length`` tokens.

Scores are sums of log-probabilities, the end token included; after the end
token, sequences are padded with ``end_token``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from keras import ops

from attnkit import _checks, sampling

if TYPE_CHECKING:
    import keras

# step(tokens (B,) int32, states) -> (log_probs (B, V), states); see the module docstring.
Step = Callable[[Any, Any], tuple[Any, Any]]
# (tokens (B, max_length) int32, scores (B,) float32, lengths (B,) int32)
Decoded = tuple[Any, Any, Any]

_NEG = -1e9


def _check(max_length, end_token, beam_width=1, length_penalty=0.0):
    _checks.positive_int(max_length, "max_length")
    _checks.non_negative_int(end_token, "end_token")
    _checks.positive_int(beam_width, "beam_width")
    _checks.non_negative_number(length_penalty, "length_penalty")


def cell_step(
    cell: keras.layers.Layer, embedding: keras.layers.Layer, projection: keras.layers.Layer
) -> Step:
    """The step of a decoder made of `embedding` -> `cell` -> `projection`.

    `projection` maps the cell output to logits or probabilities over the
    vocabulary; its log-softmax is returned (log of probabilities when its
    activation is softmax). With `alignment_history`, the alignment part of
    the output is dropped before the projection. The step's `alignment`
    attribute is `cell.state_alignment`, which `beam_search` reads for its
    coverage penalty. Unbuilt layers are built
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

    # For beam_search's coverage penalty (a function attribute, which mypy does not model).
    step.alignment = cell.state_alignment  # type: ignore[attr-defined]
    return step


def _loop(step, initial_states, choose, *, start_token, end_token, max_length, alignment_fn=None):
    """One hypothesis per example, `choose(log_probs (B, V), t) -> (B,) int32` picking
    each token. With `alignment_fn`, also the coverage: the sum of the alignments
    of the steps before the end token (B, Tv)."""
    states = list(initial_states)
    batch = ops.shape(states[0])[0]
    tokens = ops.full((batch,), start_token, dtype="int32")
    seq = ops.full((batch, max_length), end_token, dtype="int32")
    scores = ops.zeros((batch,), "float32")
    lengths = ops.zeros((batch,), "int32")
    finished = ops.zeros((batch,), "bool")
    positions = ops.arange(max_length, dtype="int32")[None, :]  # (1, L)
    extra = []
    if alignment_fn is not None:
        extra = [ops.zeros_like(ops.cast(alignment_fn(states), "float32"))]  # (B, Tv)

    def cond(t, tokens, states, seq, scores, lengths, finished, *extra):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, tokens, states, seq, scores, lengths, finished, *extra):
        log_probs, states = step(tokens, list(states))
        log_probs = ops.cast(log_probs, "float32")  # (B, V)
        chosen = choose(log_probs, t)  # (B,)
        chosen = ops.where(finished, ops.full_like(chosen, end_token), chosen)
        gained = ops.take_along_axis(log_probs, chosen[:, None], axis=-1)[:, 0]
        scores = scores + ops.where(finished, ops.zeros_like(gained), gained)
        lengths = lengths + ops.cast(ops.logical_not(finished), "int32")
        seq = ops.where(positions == t, chosen[:, None], seq)
        if extra:
            live = ops.cast(ops.logical_not(finished), "float32")[:, None]  # (B, 1)
            extra = [extra[0] + live * ops.cast(alignment_fn(states), "float32")]
        finished = ops.logical_or(finished, chosen == end_token)
        return (t + 1, chosen, list(states), seq, scores, lengths, finished, *extra)

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
            *extra,
        ),
        maximum_iterations=max_length,
    )
    return result[3:]  # seq, scores, lengths, finished(, coverage)


def _greedy_choice(log_probs, t):
    return ops.cast(ops.argmax(log_probs, axis=-1), "int32")


def greedy_decode(
    step: Step,
    initial_states: Sequence[Any],
    *,
    start_token: int,
    end_token: int,
    max_length: int,
) -> Decoded:
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
    seq, scores, lengths, _ = _loop(
        step,
        initial_states,
        _greedy_choice,
        start_token=start_token,
        end_token=end_token,
        max_length=max_length,
    )
    return seq, scores, lengths


def sample_decode(
    step: Step,
    initial_states: Sequence[Any],
    *,
    start_token: int,
    end_token: int,
    max_length: int,
    seed: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Decoded:
    """Sampling: each token drawn from the model's distribution, reshaped.

    At step `t` the token is drawn from `attnkit.sampling.filter_log_probs`
    of the step's log-probabilities: temperature `T` (`logits / T`; `T = 0`
    is greedy decoding), then top-k, then top-p (nucleus, Holtzman et al.
    2019). The noise is counter-based (`attnkit.sampling.uniform`: a hash of
    `seed`, `t`, the row and the token), so a seed gives the same tokens on
    JAX, PyTorch and TensorFlow, and inside their traced loops. This covers
    tensorflow-addons' `SampleEmbeddingSampler` (`softmax_temperature`) and
    adds top-k and top-p.

    Args:
        step: the decoder step (see the module docstring).
        initial_states: list of tensors (B, ...).
        start_token: id fed at the first step.
        end_token: id that ends a sequence.
        max_length: the most tokens generated.
        seed: an int; the same seed draws the same tokens.
        temperature: `T >= 0`. Defaults to `1.0`.
        top_k: sample among the `top_k` most probable tokens, or `None`
            for all. Defaults to `None`.
        top_p: sample among the smallest most probable set of tokens whose
            probability reaches `top_p` (in (0, 1]), or `None` for all.
            Defaults to `None`.

    Returns:
        `(tokens (B, max_length) int32, scores (B,) float32, lengths (B,)
        int32)`. The scores are the model's log-probabilities of the sampled
        tokens (before temperature and filtering), summed as in
        `greedy_decode`, so the scores of every decoder compare.
    """
    _check(max_length, end_token)
    if isinstance(seed, bool) or not isinstance(seed, int):
        _checks._fail("seed", "an integer", seed)
    temperature, top_k, top_p = sampling.check_sampling(temperature, top_k, top_p)

    def choose(log_probs, t):
        return sampling.sample_tokens(
            log_probs, seed, t, temperature=temperature, top_k=top_k, top_p=top_p
        )

    seq, scores, lengths, _ = _loop(
        step,
        initial_states,
        choose,
        start_token=start_token,
        end_token=end_token,
        max_length=max_length,
    )
    return seq, scores, lengths


def _penalty(lengths, alpha):
    # Wu et al. 2016 (GNMT): lp(Y) = ((5 + |Y|) / 6) ** alpha
    return ops.power((5.0 + ops.cast(lengths, "float32")) / 6.0, alpha)


def coverage_penalty(coverage):
    """GNMT's coverage penalty as tensorflow-addons computes it, (...) float32.

    `cp = Σ_j log(min(A_j, 1))` over the source positions `j` of the
    accumulated alignment `A` (..., Tv), positions with `A_j = 0` left out
    (they are padding, or never attended: log 1 = 0 rather than -inf), so
    `cp <= 0` and `cp = 0` once every attended position has total weight 1.
    """
    coverage = ops.cast(coverage, "float32")
    coverage = ops.where(coverage == 0.0, 1.0, coverage)
    return ops.sum(ops.log(ops.minimum(coverage, 1.0)), axis=-1)


def _rank(scores, lengths, finished, coverage, length_penalty, coverage_weight):
    """`score / lp(length) + β · cp(coverage)`, cp on finished hypotheses only."""
    rank = scores / _penalty(lengths, length_penalty) if length_penalty else scores
    if coverage_weight:
        rank = rank + coverage_weight * coverage_penalty(coverage) * ops.cast(finished, "float32")
    return rank


def _beam_step(
    log_probs,
    scores,
    lengths,
    finished,
    coverage,
    alignment,
    *,
    end_token,
    length_penalty,
    coverage_penalty_weight,
):
    """One step of beam search over (B, K) hypotheses.

    `log_probs` (B, K, V) of the next token, `scores`/`lengths`/`finished`
    (B, K), `coverage` (B, K, Tv) the alignments summed so far and
    `alignment` (B, K, Tv) this step's (both `None` without coverage).
    Returns `(parent, chosen, scores, lengths, was_finished, finished,
    coverage)`, each (B, K) but coverage (B, K, Tv) (the parent's finished
    flag is `was_finished`). A candidate is ranked by
    `total / lp(length) + β · cp(coverage)`, the coverage term (the
    parent's alignments plus this step's) counted only for hypotheses
    finished before this step, as tensorflow-addons does.
    """
    batch, k, vocab = ops.shape(log_probs)[0], log_probs.shape[1], log_probs.shape[2]
    end_only = ops.where(ops.arange(vocab) == end_token, 0.0, _NEG)  # (V,)
    log_probs = ops.where(finished[..., None], end_only[None, None, :], log_probs)
    total = scores[..., None] + log_probs  # (B, K, V)
    cand_len = lengths + ops.cast(ops.logical_not(finished), "int32")  # (B, K)
    rank = total
    if length_penalty:
        rank = total / _penalty(cand_len, length_penalty)[..., None]
    if coverage_penalty_weight:
        live = ops.cast(ops.logical_not(finished), "float32")[..., None]  # (B, K, 1)
        coverage = coverage + live * alignment  # (B, K, Tv)
        cp = coverage_penalty(coverage) * ops.cast(finished, "float32")  # (B, K)
        rank = rank + coverage_penalty_weight * cp[..., None]
    _, index = ops.top_k(ops.reshape(rank, (batch, k * vocab)), k)  # (B, K)
    index = ops.cast(index, "int32")
    parent = index // vocab
    chosen = index % vocab
    scores = ops.take_along_axis(ops.reshape(total, (batch, k * vocab)), index, axis=1)
    lengths = ops.take_along_axis(cand_len, parent, axis=1)
    was_finished = ops.take_along_axis(finished, parent, axis=1)
    finished = ops.logical_or(was_finished, chosen == end_token)
    if coverage_penalty_weight:
        depth = ops.shape(coverage)[-1]
        coverage = ops.take_along_axis(coverage, ops.repeat(parent[..., None], depth, axis=2), 1)
    return parent, chosen, scores, lengths, was_finished, finished, coverage


def beam_search(
    step: Step,
    initial_states: Sequence[Any],
    *,
    start_token: int,
    end_token: int,
    max_length: int,
    beam_width: int,
    length_penalty: float = 0.0,
    coverage_penalty_weight: float = 0.0,
    alignment_fn: Callable[[Any], Any] | None = None,
    keep_greedy: bool = True,
) -> Decoded:
    """Beam search: keeps the `beam_width` best prefixes at every step.

    Candidates are ranked by `score / lp(length) + β · cp` with the GNMT
    (Wu et al. 2016) length penalty `lp = ((5 + length) / 6) ** length_penalty`
    (no penalty at 0; the length counts the end token) and, with
    `coverage_penalty_weight` β > 0, the coverage penalty
    `cp = Σ_j log(min(A_j, 1))` (`coverage_penalty`), where `A` sums the
    hypothesis' alignments over the source, positions with `A_j = 0`
    left out. As in tensorflow-addons' `BeamSearchDecoder`, `cp` counts only
    for hypotheses already finished, and `A` sums the alignments of the
    steps up to and including the one that emitted the end token. It
    favours translations that attend to every source position. The final
    choice ranks every finished hypothesis with its `cp` (tensorflow-addons'
    last step leaves it out for those that end at that very step).

    A finished hypothesis stays in the beam with its score. Width 1 is
    greedy decoding. Beam search alone is a heuristic: a wider beam usually,
    but not provably, finds a sequence at least as probable as greedy's (the
    greedy prefix can fall out of the beam). With `keep_greedy` (the
    default) the greedy hypothesis is decoded too and the better-ranked of
    the two is returned, so widening the beam never gives a lower-ranked
    result.

    Args:
        step: the decoder step (see the module docstring).
        initial_states: list of tensors (B, ...), tiled over the beams here.
        start_token: id fed at the first step.
        end_token: id that ends a sequence.
        max_length: the most tokens generated.
        beam_width: K, the number of hypotheses kept.
        length_penalty: GNMT's alpha (tensorflow-addons'
            `length_penalty_weight`). Defaults to `0.0`.
        coverage_penalty_weight: GNMT's beta, `>= 0`. Defaults to `0.0`.
        alignment_fn: `f(states) -> (N, Tv)`, the alignment of the step that
            returned `states`; needed for the coverage penalty. `None` takes
            `step.alignment` (set by `cell_step`: the cell's
            `state_alignment`). Defaults to `None`.
        keep_greedy: also decode greedily and return greedy's hypothesis
            where it ranks higher. Defaults to `True`.

    Returns:
        The best hypothesis per example: `(tokens (B, max_length) int32,
        scores (B,) float32 (log-probability, unpenalised), lengths (B,) int32)`.
    """
    _check(max_length, end_token, beam_width, length_penalty)
    beta = _checks.non_negative_number(coverage_penalty_weight, "coverage_penalty_weight")
    if alignment_fn is None:
        alignment_fn = getattr(step, "alignment", None)
    if beta and not callable(alignment_fn):
        _checks._fail(
            "alignment_fn",
            "a function states -> alignment (N, Tv) when coverage_penalty_weight > 0 "
            "(the step has no `alignment` attribute)",
            alignment_fn,
        )
    if not beta:
        alignment_fn = None
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
    extra = []
    if beta:
        tv = ops.shape(alignment_fn(states))[-1]  # type: ignore[misc]  # callable: checked above
        extra = [ops.zeros((batch, k, tv), "float32")]  # (B, K, Tv)

    def cond(t, tokens, states, seq, scores, lengths, finished, *extra):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, tokens, states, seq, scores, lengths, finished, *extra):
        log_probs, states = step(tokens, list(states))
        vocab = log_probs.shape[-1]
        log_probs = ops.reshape(ops.cast(log_probs, "float32"), (batch, k, vocab))  # (B, K, V)
        coverage = alignment = None
        if beta:
            coverage = extra[0]
            alignment = ops.reshape(
                ops.cast(alignment_fn(states), "float32"), ops.shape(coverage)
            )  # (B, K, Tv)
        parent, chosen, scores, lengths, was_finished, finished, coverage = _beam_step(
            log_probs,
            scores,
            lengths,
            finished,
            coverage,
            alignment,
            end_token=end_token,
            length_penalty=length_penalty,
            coverage_penalty_weight=beta,
        )
        seq = ops.take_along_axis(seq, ops.repeat(parent[..., None], max_length, axis=2), axis=1)
        write = ops.logical_and(positions == t, ops.logical_not(was_finished)[..., None])
        seq = ops.where(write, chosen[..., None], seq)
        rows = ops.reshape(offsets + parent, (-1,))  # (B·K,)
        states = [ops.take(s, rows, axis=0) for s in states]
        extra = [coverage] if beta else []
        return (t + 1, ops.reshape(chosen, (-1,)), states, seq, scores, lengths, finished, *extra)

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
            *extra,
        ),
        maximum_iterations=max_length,
    )
    seq, scores, lengths, finished = result[3], result[4], result[5], result[6]
    coverage = result[7] if beta else None
    rank = _rank(scores, lengths, finished, coverage, length_penalty, beta)
    best = ops.cast(ops.argmax(rank, axis=-1), "int32")[:, None]  # (B, 1)
    best_seq = ops.take_along_axis(seq, ops.repeat(best[..., None], max_length, axis=2), axis=1)
    best_seq = best_seq[:, 0]  # (B, L)
    best_score = ops.take_along_axis(scores, best, axis=1)[:, 0]
    best_len = ops.take_along_axis(lengths, best, axis=1)[:, 0]
    best_rank = ops.take_along_axis(rank, best, axis=1)[:, 0]
    if not keep_greedy or k == 1:
        return best_seq, best_score, best_len
    g_seq, g_score, g_len, g_finished, *g_coverage = _loop(
        step,
        initial_states,
        _greedy_choice,
        start_token=start_token,
        end_token=end_token,
        max_length=max_length,
        alignment_fn=alignment_fn,
    )
    g_rank = _rank(
        g_score, g_len, g_finished, g_coverage[0] if beta else None, length_penalty, beta
    )
    beam_wins = best_rank >= g_rank
    return (
        ops.where(beam_wins[:, None], best_seq, g_seq),
        ops.where(beam_wins, best_score, g_score),
        ops.where(beam_wins, best_len, g_len),
    )
