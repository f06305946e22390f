"""A small synthetic language with long-range structure, for ``attnkit demo lm``.

Word-level "stories" drawn from a probabilistic grammar, deterministic for a
seed (NumPy's PCG64), stdlib and NumPy only (no downloads). A story::

    <doc> anna has a red cup and a small key . anna buys pear fig rice .
    she walks to the park . the weather is cold . the cup is red .
    she eats pear fig rice . anna gives the key to tom . the end .

Much of it can only be predicted by looking back, often tens of tokens:

- the pronoun (``she``/``he``) follows the protagonist's name, given once at
  the start;
- ``the <noun> is`` is followed by the adjective the noun was introduced with;
- ``<name> eats`` repeats the list of foods bought, in order (a copy, which
  needs attention rather than local statistics);
- ``<name> gives the`` names one of the two objects introduced.

Fillers (walks, weather, meeting someone) are drawn independently and keep
the stories varied. Stories are concatenated into one token stream, each
opened by ``<doc>``; ``chunks`` cuts it into model inputs and next-token
targets.
"""

from __future__ import annotations

import numpy as np

DOC = "<doc>"
FEMALE = ("anna", "mia", "lena", "sara", "eva", "ida", "zoe", "nora")
MALE = ("tom", "max", "leo", "ben", "sam", "jon", "eli", "noah")
ADJECTIVES = ("red", "blue", "green", "small", "big", "old", "new", "soft")
OBJECTS = ("cup", "box", "hat", "ball", "book", "lamp", "coat", "key", "bag", "pen")
FOODS = ("apple", "pear", "fig", "plum", "bread", "cheese", "egg", "rice", "soup", "cake")
PLACES = ("market", "park", "school", "river", "garden", "station")
WEATHER = ("sunny", "cold", "warm", "windy", "grey")
MOTION = ("walks", "runs", "drives")
FUNCTION_WORDS = (
    "has", "a", "and", "buys", "eats", "to", "the", "is", "weather", "sees",
    "gives", "end", "she", "he", ".",
)  # fmt: skip
VOCAB = (
    DOC,
    *FUNCTION_WORDS,
    *FEMALE,
    *MALE,
    *ADJECTIVES,
    *OBJECTS,
    *FOODS,
    *PLACES,
    *WEATHER,
    *MOTION,
)
TOKEN_ID = {word: i for i, word in enumerate(VOCAB)}
DOC_ID = TOKEN_ID[DOC]


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _filler(rng, pronoun, name):
    kind = int(rng.integers(3))
    if kind == 0:
        return [pronoun, _pick(rng, MOTION), "to", "the", _pick(rng, PLACES), "."]
    if kind == 1:
        return ["the", "weather", "is", _pick(rng, WEATHER), "."]
    other = _pick(rng, [n for n in FEMALE + MALE if n != name])
    return [pronoun, "sees", other, "."]


def story(rng) -> list[str]:
    """One story (a list of words, ``<doc>`` first) drawn with ``rng``."""
    female = bool(rng.integers(2))
    name = _pick(rng, FEMALE if female else MALE)
    pronoun = "she" if female else "he"
    objects = [OBJECTS[i] for i in rng.choice(len(OBJECTS), 2, replace=False)]
    adjectives = [_pick(rng, ADJECTIVES) for _ in objects]
    foods = [FOODS[i] for i in rng.choice(len(FOODS), int(rng.integers(2, 5)), replace=False)]
    words = [DOC, name, "has", "a", adjectives[0], objects[0], "and", "a"]
    words += [adjectives[1], objects[1], "."]
    words += [name, "buys", *foods, "."]
    recalls = [
        ["the", objects[0], "is", adjectives[0], "."],
        ["the", objects[1], "is", adjectives[1], "."],
        [pronoun, "eats", *foods, "."],
        [name, "gives", "the", _pick(rng, objects), "to"],
    ]
    recalls[3] += [_pick(rng, [n for n in FEMALE + MALE if n != name]), "."]
    order = rng.permutation(len(recalls))
    for i in order:
        for _ in range(int(rng.integers(0, 3))):
            words += _filler(rng, pronoun, name)
        words += recalls[i]
    words += ["the", "end", "."]
    return words


def stream(num_tokens: int, seed: int) -> np.ndarray:
    """At least ``num_tokens`` token ids, (N,) int32: whole stories, concatenated."""
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(
            f"`num_tokens` must be a positive integer. Received: num_tokens={num_tokens!r}"
        )
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    while len(ids) < num_tokens:
        ids += [TOKEN_ID[w] for w in story(rng)]
    return np.asarray(ids, dtype="int32")


def chunks(ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping inputs ``x`` (N, length) and next-token targets ``y``.

    ``y[i, t] = x[i, t + 1]``, the last target being the first token of the
    next chunk; a remainder shorter than ``length + 1`` tokens is dropped.
    """
    n = (len(ids) - 1) // length
    if n < 1:
        raise ValueError(
            f"The stream must hold more than `length` tokens. Received: "
            f"{len(ids)} tokens, length={length}"
        )
    x = ids[: n * length].reshape(n, length)
    y = ids[1 : n * length + 1].reshape(n, length)
    return x, y


def encode(text: str) -> np.ndarray:
    """Space-separated words to token ids (1-D int32); unknown words are errors."""
    words = text.split()
    unknown = [w for w in words if w not in TOKEN_ID]
    if unknown:
        raise ValueError(f"Words outside the vocabulary: {unknown}. Received: text={text!r}")
    return np.asarray([TOKEN_ID[w] for w in words], dtype="int32")


def decode(ids) -> str:
    """Token ids to space-separated words."""
    return " ".join(VOCAB[int(i)] for i in np.asarray(ids).reshape(-1))


def unigram_entropy(ids: np.ndarray) -> float:
    """Entropy (nats/token) of the unigram distribution of ``ids``."""
    counts = np.bincount(ids, minlength=len(VOCAB)).astype("float64")
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def bigram_cross_entropy(train: np.ndarray, test: np.ndarray, alpha: float = 0.1) -> float:
    """Held-out cross-entropy (nats/token) of an add-``alpha`` bigram model of ``train``."""
    v = len(VOCAB)
    counts = np.full((v, v), alpha)
    np.add.at(counts, (train[:-1], train[1:]), 1.0)
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    return float(-log_p[test[:-1], test[1:]].mean())
