"""``attnkit show``: saved model + input -> HTML view and PNG; bad input -> one line, exit 2."""

import json
import shlex

import keras
import numpy as np
import pytest
from PIL import Image

from attnkit import attention_maps
from attnkit.cli import main as cli
from attnkit.cli import show
from attnkit.cli.demos import dates as dates_demo
from attnkit.data import dates
from attnkit.models import date_translator as dt
from attnkit.viz import View
from attnkit.viz.views import head_lines


def _page_data(path):
    """The JSON a view page draws (window.ATTNKIT_DATA)."""
    page = path.read_text(encoding="utf-8")
    start = page.index("window.ATTNKIT_DATA = ") + len("window.ATTNKIT_DATA = ")
    return json.loads(page[start : page.index(";</script>", start)].replace("<\\/", "</"))


def _matrix(data, n=0):
    import base64

    e = data["maps"][n]
    return np.frombuffer(base64.b64decode(e["w"]), "<f4").reshape(e["rows"], e["cols"])


def _check_png(path):
    image = Image.open(path)
    image.verify()  # a valid PNG file
    assert Image.open(path).format == "PNG" and min(Image.open(path).size) > 100


def _fails(capsys, *argv):
    rc = cli.main(["show", *map(str, argv)])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnkit show: "), err
    return lines[0]


@pytest.fixture(scope="module")
def dates_model(tmp_path_factory):
    """The dates demo's model, saved as the demo saves it (untrained: show reads any weights)."""
    folder = tmp_path_factory.mktemp("dates")
    model = dt.build_training_model("additive", seed=0)
    path = folder / "dates.keras"
    model.save(path)
    dates_demo.save_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def mha_model(tmp_path_factory):
    """A small self-attention model over (6, 4) inputs, saved."""
    folder = tmp_path_factory.mktemp("mha")
    x = keras.Input((6, 4), name="x")
    y = keras.layers.MultiHeadAttention(2, 4, name="self_attention")(x, x)
    model = keras.Model(x, keras.layers.GlobalAveragePooling1D()(y))
    path = folder / "mha.keras"
    model.save(path)
    inputs = np.random.default_rng(0).normal(size=(3, 6, 4)).astype("float32")
    np.save(folder / "x.npy", inputs)
    return path, folder / "x.npy", inputs


def test_show_dates_text_writes_the_alignment_view_and_png(capsys, dates_model, tmp_path):
    text = "3 may 1979"
    # Run as the line the dates demo prints for its model.
    argv = shlex.split(show.command_line(dates_model, [text], out=tmp_path))
    assert argv[:2] == ["attnkit", "show"]
    rc = cli.main(argv[1:])
    out, err = capsys.readouterr()
    assert rc == 0, err
    html, png = tmp_path / "dates_matrix.html", tmp_path / "dates_matrix.png"
    assert f"view: {html}" in out and f"png:  {png}" in out
    _check_png(png)
    data = _page_data(html)
    assert data["kind"] == "matrix"

    # The same translation and alignment as the demo's own decoding path.
    model = keras.saving.load_model(dates_model)
    x = dates.encode_human([text])
    pred = dt.greedy_translate(model, x)
    iso = dates.decode_machine(pred)[0]
    assert f"{text!r} -> {iso}" in out
    (entry,) = data["maps"]
    assert entry["qtok"] == list(iso)
    assert entry["ktok"] == [*text, "<pad>"]
    expected = dt.alignments(model, x, pred)[0, :, : len(text) + 1]  # (Ty, len + 1)
    np.testing.assert_allclose(_matrix(data), expected, rtol=1e-5, atol=1e-6)


def test_show_npy_inputs_head_and_model_views(capsys, mha_model, tmp_path):
    path, npy, inputs = mha_model
    model = keras.saving.load_model(path)
    expected = attention_maps(model, inputs)["self_attention"][2]  # (H, T, T)
    rc = cli.main(
        ["show", str(path), str(npy), "--view", "head", "--example", "2", "--out", str(tmp_path)]
    )
    capsys.readouterr()
    assert rc == 0
    data = _page_data(tmp_path / "mha_head.html")
    assert data["kind"] == "head" and data["layers"][0]["h"] == 2
    view = View("head", data, None, 0)  # the page's data, read back as a view
    lines = head_lines(view)
    assert len(lines) == int((expected >= 0.01).sum())  # 6 keys < top_k: all above threshold
    for h, i, j, a in lines:
        assert abs(a - max(expected[h, i, j], 1 / 255)) <= 0.5 / 255 + 1e-6
    _check_png(tmp_path / "mha_head.png")

    one = tmp_path / "one.npy"
    np.save(one, inputs[0])  # no batch axis: one example
    assert cli.main(["show", str(path), str(one), "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert _page_data(tmp_path / "mha_model.html")["kind"] == "model"  # auto: 2 heads, T x T


# bad input: one line on stderr, exit code 2


def test_show_refuses_what_is_not_a_keras_model(capsys, tmp_path):
    missing = tmp_path / "missing.keras"
    assert "`MODEL` must be an existing .keras file. Received: MODEL=" in _fails(
        capsys, missing, "x.npy"
    )
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    line = _fails(capsys, text, "x.npy")
    assert "`MODEL` must be a Keras model saved as .keras (a zip archive)" in line
    fake = tmp_path / "fake.keras"
    import zipfile

    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("config.json", "{}")
    assert "`MODEL` could not be loaded in safe mode" in _fails(capsys, fake, "x.npy")


def test_show_refuses_a_model_without_attention(capsys, tmp_path):
    x = keras.Input((3,))
    model = keras.Model(x, keras.layers.Dense(2)(x))
    model.save(tmp_path / "dense.keras")
    np.save(tmp_path / "x.npy", np.zeros((2, 3), "float32"))
    line = _fails(capsys, tmp_path / "dense.keras", tmp_path / "x.npy")
    assert "`MODEL` must contain an attention layer" in line


def test_show_refuses_inputs_of_the_wrong_shape_number_or_kind(capsys, mha_model, tmp_path):
    path, npy, _ = mha_model
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 4), "float32"))
    line = _fails(capsys, path, tmp_path / "bad.npy")
    assert "`INPUT` must have shape (N, 6, 4) for the model input 'x'" in line
    assert "of shape (2, 5, 4)" in line
    line = _fails(capsys, path, npy, npy)
    assert "`INPUT` must be one .npy file per model input (1: x). Received: 2 files" in line
    line = _fails(capsys, path, "some text")
    assert (
        "`INPUT` must be .npy files: the model has no tokenizer file (mha.tokenizer.json)" in line
    )
    assert "must be all .npy files or all texts" in _fails(capsys, path, npy, "text")
    (tmp_path / "junk.npy").write_text("junk")
    assert "`INPUT` must be a readable .npy array" in _fails(capsys, path, tmp_path / "junk.npy")
    line = _fails(capsys, path, npy, "--example", "3")
    assert "`--example` must be below the batch size 3. Received: --example 3" in line
    line = _fails(capsys, path, npy, "--layer", "nope")
    assert "`--layer` must name attention layers of the model ('self_attention',)" in line


def test_show_help_and_the_top_level_listing(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["show", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for flag in ("MODEL", "INPUT", "--out", "--view", "--layer", "--example", "--backend"):
        assert flag in out
