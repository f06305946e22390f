"""``attnkit demo dates`` smoke run, and the year-attention statistic."""

import keras
import matplotlib.image
import numpy as np
import pytest

from attnkit.cli import main as cli
from attnkit.data import dates
from attnkit.models import date_translator as dt


def _check_png(path):
    assert path.is_file(), path
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
    assert pixels.std() > 0.01  # something was drawn


@pytest.mark.parametrize("decoder", ["cell", "additive"])
def test_demo_dates_smoke(capsys, tmp_path, decoder):
    rc = cli.main(
        [
            "demo",
            "dates",
            "--decoder",
            decoder,
            "--epochs",
            "1",
            "--samples",
            "256",
            "--test-samples",
            "32",
            "--batch-size",
            "64",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    lines = [line for line in out.splitlines() if line.startswith("exact-match")]
    assert len(lines) == 1 and lines[0].endswith("/32)")
    assert "3 may 1979" in out
    assert str(tmp_path / "dates_attention.png") in out
    _check_png(tmp_path / "dates_attention.png")

    model = keras.saving.load_model(tmp_path / "dates.keras")  # no custom_objects
    x = dates.encode_human(["3 may 1979", "5/3/79"])
    probs = model.predict([x, dates.teacher_inputs(np.zeros((2, 10), "int32"))])
    assert probs.shape == (2, dates.TY, len(dates.MACHINE_VOCAB))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    weights = dt.alignments(model, x, np.zeros((2, dates.TY), "int32"))
    assert weights.shape == (2, dates.TY, dates.TX)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    # padding is masked: no weight after "3 may 1979" (10 characters)
    assert np.all(weights[0, :, 10:] == 0)


def test_greedy_translate_feeds_back_its_own_outputs():
    """Each step reads the previous step's output, not a teacher's."""
    x_in = keras.Input((dates.TX,), dtype="int32")
    y_in = keras.Input((dates.TY,), dtype="int32")
    # step t predicts (previous token + 1) mod 12
    nxt = keras.layers.Lambda(lambda t: keras.ops.mod(t + 1, 12))(y_in)
    probs = keras.layers.Lambda(lambda t: keras.ops.one_hot(t, 12))(nxt)
    model = keras.Model([x_in, y_in], probs)
    for batch_size in (512, 2):  # one batch; two and a remainder
        out = dt.greedy_translate(model, np.zeros((3, dates.TX), "int32"), batch_size)
        # GO (11) -> 0, then 1, 2, ..., 9
        np.testing.assert_array_equal(out, np.tile(np.arange(10), (3, 1)))


def _predict_loop(model, x):
    """Greedy decoding as the demo did it before ``attnkit.decoding``: ``predict``
    on the decoded prefix, one output character a step."""
    dec_in = np.full((len(x), dates.TY), dates.GO_ID, "int32")
    out = np.zeros((len(x), dates.TY), "int32")
    for t in range(dates.TY):
        out[:, t] = model.predict([x, dec_in], verbose=0)[:, t].argmax(-1)
        if t + 1 < dates.TY:
            dec_in[:, t + 1] = out[:, t]
    return out


@pytest.mark.parametrize("decoder", dt.DECODERS)
def test_greedy_translate_decodes_as_the_predict_loop(decoder):
    keras.utils.set_random_seed(0)
    model = dt.build_training_model(decoder, seed=0)
    texts = [h for h, _ in dates.random_dates(24, seed=1)]
    x = dates.encode_human(texts)
    expected = _predict_loop(model, x)
    assert len({tuple(row) for row in expected}) > 1  # not one constant output
    np.testing.assert_array_equal(dt.greedy_translate(model, x, batch_size=10), expected)


def _peaked(texts, shift=0):
    """Weights whose year rows peak on the year (shifted by ``shift``)."""
    weights = np.full((len(texts), dates.TY, dates.TX), 0.01, "float32")
    for i, text in enumerate(texts):
        start, end = dates.year_span(text)
        for k in range(4):
            weights[i, k, min(start + k % (end - start) + shift, dates.TX - 1)] = 1.0
    return weights


TEXTS = ["3 may 1979", "5/3/79", "thursday may 3 1979", "03.05.79"]


@pytest.mark.parametrize("outputs", ["written", "all"])
@pytest.mark.parametrize("per_digit", [False, True])
def test_year_attention_rate_counts_peaks_inside_the_year(per_digit, outputs):
    def rate(w):
        return dt.year_attention_rate(w, TEXTS, per_digit, outputs)

    assert rate(_peaked(TEXTS)) == 1.0
    assert rate(_peaked(TEXTS, shift=-1)) == 0.0
    # outputs after the year (month, day) do not count
    weights = _peaked(TEXTS)
    weights[:, 5:, 0] = 9.0
    assert rate(weights) == 1.0


def test_year_attention_rate_judges_the_written_digits_by_default():
    weights = _peaked(TEXTS)
    weights[1, 1, :] = 0.0
    weights[1, 1, 3] = 1.0  # "5/3/79": the century's second digit on the "/"
    for per_digit in (False, True):
        assert dt.year_attention_rate(weights, TEXTS, per_digit) == 1.0
    assert dt.year_attention_rate(weights, TEXTS, outputs="all") == 1.0
    assert dt.year_attention_rate(weights, TEXTS, per_digit=True, outputs="all") == 0.75
    # Both century outputs of "79" resting on the "/" with more weight than the
    # two written digits: the summed peak leaves the year only when they count.
    weights[1, :2, :] = 0.0
    weights[1, :2, 3] = 2.0
    assert dt.year_attention_rate(weights, TEXTS) == 1.0
    assert dt.year_attention_rate(weights, TEXTS, outputs="all") == 0.75
    # A written digit's output off the year makes the example miss in every form.
    weights[2, 3, :] = 0.0
    weights[2, 3, 0] = 1.0  # "thursday may 3 1979": the last year digit on "t"
    assert dt.year_attention_rate(weights, TEXTS, per_digit=True) == 0.75
    weights[2, :4, :] = 0.0
    weights[2, :4, 0] = 1.0
    assert dt.year_attention_rate(weights, TEXTS) == 0.75
    with pytest.raises(ValueError, match="outputs='some'"):
        dt.year_attention_rate(weights, TEXTS, outputs="some")


def test_year_attention_mass_tells_a_ramp_from_reading_the_year():
    peaked = _peaked(TEXTS)
    peaked = np.where(peaked == 1.0, peaked, 0.0)  # one-hot rows
    assert dt.year_attention_mass(peaked, TEXTS) == 1.0
    # Shifted one left, the outputs that sat on a year's first digit land before
    # it: 1 of 4 outputs for "1979", and for "79" (written digits 7, 9 in
    # outputs 3 and 4) 1 of 2, or 2 of 4 when the century outputs count.
    shifted = np.roll(peaked, -1, axis=-1)
    assert dt.year_attention_mass(shifted, TEXTS) == np.mean([0.75, 0.5, 0.75, 0.5])
    assert dt.year_attention_mass(shifted, TEXTS, outputs="all") == np.mean([0.75, 0.5, 0.75, 0.5])
    # Attention growing towards the end of the input: the argmax is the year's
    # last digit, yet most of the mass lies elsewhere.
    ramp = np.zeros_like(peaked)
    for i, text in enumerate(TEXTS):
        ramp[i, :, : len(text)] = np.arange(1, len(text) + 1) / np.sum(np.arange(1, len(text) + 1))
    assert dt.year_attention_rate(ramp, TEXTS) == 1.0
    expected = np.mean([ramp[i, 0, slice(*dates.year_span(t))].sum() for i, t in enumerate(TEXTS)])
    assert dt.year_attention_mass(ramp, TEXTS) == pytest.approx(expected)
    assert expected < 0.7


def test_held_out_dates_are_not_in_training_and_are_seeded():
    from attnkit.cli.demos import dates as demo

    train = [h for h, _ in dates.random_dates(3000, seed=0)]
    texts, isos, x, y = demo.held_out(500, train, seed=0)
    assert len(texts) == 500 and not set(texts) & set(train)
    assert x.shape == (500, dates.TX) and dates.decode_machine(y) == isos
    assert demo.held_out(500, train, seed=0)[0] == texts
    # a larger exclusion set still gives enough unseen dates
    more = demo.held_out(50, texts[:400], seed=0)[0]
    assert len(more) == 50 and not set(more) & set(texts[:400])
