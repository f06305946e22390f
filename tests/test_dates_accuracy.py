"""The default ``attnkit demo dates`` run: accuracy and where the years are read."""

import argparse
import re

import keras
import pytest

from attnkit.cli import main as cli
from attnkit.cli.demos import dates as demo
from attnkit.data import dates
from attnkit.models import date_translator as dt


@pytest.mark.slow
def test_default_demo_reaches_99_5_percent_and_reads_years_from_the_year(capsys, tmp_path):
    rc = cli.main(["demo", "dates", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    match = re.search(r"exact-match accuracy: ([\d.]+)% \((\d+)/(\d+)\)", out)
    assert match, out
    assert int(match[3]) >= 2000
    assert float(match[1]) >= 99.5, out

    # The saved model, on the same held-out dates the demo scored.
    model = keras.saving.load_model(tmp_path / "dates.keras")
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    defaults = parser.parse_args([])
    train_texts = [h for h, _ in dates.random_dates(defaults.samples, defaults.seed)]
    texts, isos, x, _ = demo.held_out(defaults.test_samples, train_texts, defaults.seed)
    pred = dt.greedy_translate(model, x)
    correct = sum(p == t for p, t in zip(dates.decode_machine(pred), isos, strict=True))
    assert correct / len(isos) >= 0.995
    weights = dt.alignments(model, x, pred)  # (2000, Ty, Tx)
    # The outputs of the year digits written in the input peak on the input's
    # year (for a two-digit year the inferred century is not judged, see
    # year_attention_rate) ...
    assert dt.year_attention_rate(weights, texts) >= 0.95
    # ... and not by attention that merely grows towards the end, where the year is.
    assert dt.year_attention_mass(weights, texts) >= 0.75


@pytest.mark.slow
def test_attention_rnn_cell_decoder_reaches_99_percent(capsys, tmp_path):
    """Bi-LSTM encoder, ``RNN(AttentionRNNCell(LSTMCell, BahdanauAttention))`` decoder."""
    rc = cli.main(["demo", "dates", "--decoder", "cell", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    match = re.search(r"exact-match accuracy: ([\d.]+)% \((\d+)/(\d+)\)", out)
    assert match, out
    assert int(match[3]) >= 2000
    assert float(match[1]) >= 99.0, out
    model = keras.saving.load_model(tmp_path / "dates.keras")
    cells = [layer.cell for layer in model.layers if isinstance(layer, keras.layers.RNN)]
    assert [type(c).__name__ for c in cells] == ["AttentionRNNCell"]
    assert type(cells[0].cell).__name__ == "LSTMCell"
    assert type(cells[0].mechanism).__name__ == "BahdanauAttention"
