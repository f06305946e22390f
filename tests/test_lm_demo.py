"""``attnkit demo lm``: a tiny smoke run, the language model's cache, the story data."""

import re

import keras
import numpy as np
import pytest

from attnkit.cli import main as cli
from attnkit.data import synthetic_text as st
from attnkit.models.language_model import LanguageModel

TINY = [
    "demo",
    "lm",
    "--size",
    "tiny",
    "--epochs",
    "1",
    "--tokens",
    "3000",
    "--test-tokens",
    "1000",
    "--length",
    "32",
    "--generate",
    "40",
]


def _line(out, prefix):
    lines = [line for line in out.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, out
    return lines[0][len(prefix) :]


def test_demo_lm_smoke(capsys, tmp_path):
    rc = cli.main([*TINY, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    loss = re.fullmatch(
        r"(\d+\.\d+) nats/token; unigram entropy (\d+\.\d+), bigram (\d+\.\d+) nats/token",
        _line(out, "held-out loss: "),
    )
    assert loss is not None, out
    assert 0 < float(loss[3]) < float(loss[2]) < np.log(len(st.VOCAB))
    rates = re.fullmatch(
        r"generating 40 tokens: (\d+) with the cache, (\d+) without \(\d+\.\dx\); "
        r"same greedy tokens: yes",
        _line(out, "tokens/s "),
    )
    assert rates is not None, out
    assert str(tmp_path / "lm.keras") in out

    prompt = st.encode(_line(out, "prompt: "))[None]
    continuation = _line(out, "greedy continuation: ")
    model = keras.saving.load_model(tmp_path / "lm.keras")  # no custom_objects
    assert isinstance(model, LanguageModel) and model.num_layers == 1
    assert st.decode(model.generate(prompt, 40)) == continuation
    assert st.decode(model.generate(prompt, 40, use_cache=False)) == continuation


def _model(**kwargs):
    keras.utils.set_random_seed(0)
    config = dict(
        vocab_size=29,
        max_length=48,
        num_layers=2,
        hidden_dim=32,
        num_query_heads=4,
        num_key_value_heads=2,
        sliding_window=6,
    )
    return LanguageModel(**{**config, **kwargs})


PROMPT = np.random.default_rng(0).integers(0, 29, (3, 7)).astype("int32")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"position_embedding": None, "tie_embeddings": False},
        {"sliding_window": None, "num_key_value_heads": 1},
        {"position_embedding": "learned"},
    ],
)
def test_greedy_tokens_are_the_same_with_and_without_the_cache(kwargs):
    model = _model(**kwargs)
    cached = model.generate(PROMPT, 41)  # to max_length: 7 + 41 = 48
    assert cached.shape == (3, 41) and cached.dtype == np.int32
    assert len(np.unique(cached)) > 3  # not one repeated token
    np.testing.assert_array_equal(model.generate(PROMPT, 41, use_cache=False), cached)


def test_greedy_generation_is_the_argmax_of_the_full_model():
    model = _model()
    tokens = model.generate(PROMPT, 10)
    sequence = np.concatenate([PROMPT, tokens], axis=1)
    logits = keras.ops.convert_to_numpy(model(sequence[:, :-1]))  # (B, T, V)
    np.testing.assert_array_equal(logits[:, PROMPT.shape[1] - 1 :].argmax(-1), tokens)


def test_cache_step_matches_the_full_call():
    model = _model()
    x = np.concatenate([PROMPT, PROMPT[:, :5]], axis=1)  # (3, 12)
    full = keras.ops.convert_to_numpy(model(x))
    logits, cache = model.call_with_cache(x[:, :7], model.init_cache(3), 0)
    steps = [keras.ops.convert_to_numpy(logits)]
    for t in range(7, 12):
        logits, cache = model.call_with_cache(x[:, t : t + 1], cache, t)
        steps.append(keras.ops.convert_to_numpy(logits))
    assert tuple(cache.shape) == (3, 2, 2, 48, 2, 8)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_sampled_tokens_are_the_same_with_and_without_the_cache_and_seeded():
    model = _model()
    settings = dict(temperature=1.0, top_k=10, top_p=0.9, seed=3)
    cached = model.generate(PROMPT, 20, **settings)
    np.testing.assert_array_equal(model.generate(PROMPT, 20, use_cache=False, **settings), cached)
    other = model.generate(PROMPT, 20, **{**settings, "seed": 4})
    assert not np.array_equal(other, cached)


def test_generate_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"fit in `max_length` \(48\).*num_tokens=42"):
        model.generate(PROMPT, 42)
    with pytest.raises(ValueError, match=r"prompt_tokens.shape=\(7,\)"):
        model.generate(PROMPT[0], 4)
    with pytest.raises(ValueError, match="num_tokens"):
        model.generate(PROMPT, 0)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(PROMPT, 4, temperature=1.0, top_p=1.5)


def test_constructor_errors():
    with pytest.raises(ValueError, match="position_embedding='sinusoidal'"):
        _model(position_embedding="sinusoidal")
    with pytest.raises(ValueError, match="hidden_dim=30, num_query_heads=4"):
        _model(hidden_dim=30)


def test_saved_model_reloads_with_the_same_outputs(tmp_path):
    model = _model(tie_embeddings=False)
    expected = model.generate(PROMPT, 12)
    model.save(tmp_path / "lm.keras")
    reloaded = keras.saving.load_model(tmp_path / "lm.keras")
    assert reloaded.get_config() == model.get_config()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(PROMPT)),
        keras.ops.convert_to_numpy(model(PROMPT)),
        atol=1e-6,
    )
    np.testing.assert_array_equal(reloaded.generate(PROMPT, 12), expected)


def test_one_training_step_lowers_the_loss():
    model = _model()
    x, y = st.chunks(st.stream(2000, 0), 16)
    x, y = x % 29, y % 29
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=2, batch_size=len(x), verbose=0)
    assert model.evaluate(x, y, verbose=0) < before


def test_stories_are_seeded_and_recall_what_they_introduced():
    a, b = st.stream(5000, 7), st.stream(5000, 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(st.stream(5000, 8)[:100], a[:100])
    text = st.decode(a)
    stories = [s.split() for s in text.split("<doc>")[1:]]
    assert len(stories) > 20
    for words in stories:
        # "<name> has a <adj> <obj> and a <adj> <obj> ." then "the <obj> is <adj> ."
        facts = {words[4]: words[3], words[8]: words[7]}
        recalled = [
            (words[i + 1], words[i + 3])
            for i in range(9, len(words) - 3)
            if words[i] == "the" and words[i + 2] == "is" and words[i + 1] in facts
        ]
        assert len(recalled) == 2 and all(facts[o] == adj for o, adj in recalled)
        bought = words[words.index("buys") + 1 : words.index(".", words.index("buys"))]
        eats = words.index("eats")
        assert words[eats + 1 : eats + 1 + len(bought)] == bought
        assert words[-2:] == ["end", "."]


def test_chunks_and_baselines():
    ids = np.arange(23, dtype="int32") % len(st.VOCAB)
    x, y = st.chunks(ids, 5)
    assert x.shape == y.shape == (4, 5)
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    assert y[-1, -1] == ids[20]
    with pytest.raises(ValueError, match="length=30"):
        st.chunks(ids, 30)
    uniform = np.arange(len(st.VOCAB), dtype="int32")
    assert st.unigram_entropy(uniform) == pytest.approx(np.log(len(st.VOCAB)))
    assert st.decode(st.encode("<doc> anna has a cup .")) == "<doc> anna has a cup ."
    with pytest.raises(ValueError, match="zebra"):
        st.encode("anna has a zebra")


@pytest.mark.slow
def test_demo_lm_full_run_beats_the_unigram_baseline(capsys, tmp_path):
    """The full demo (several minutes): held-out loss at least 1.5 nats/token
    below the training unigram entropy, and below the bigram model's."""
    assert cli.main(["demo", "lm", "--out", str(tmp_path)]) == 0
    line = _line(capsys.readouterr().out, "held-out loss: ")
    loss, unigram, bigram = map(float, re.findall(r"\d+\.\d+", line))
    assert loss < unigram - 1.5
    assert loss < bigram
