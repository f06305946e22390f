"""attnkit.viz views: the data each page draws, static exports read back, errors.

The pages themselves are driven in headless Chromium by tests/browser/.
"""

import base64
import io
import re
import xml.etree.ElementTree as ET

import keras
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from attnkit import attention_maps
from attnkit.viz import View, head_view, matrix_view, model_view
from attnkit.viz.views import (
    ALPHA_LEVELS,
    colormap_lut,
    head_lines,
    matrix_maps,
    model_maps,
)

LUT = colormap_lut("viridis").astype("int64")  # (256, 3)


def _weights(shape, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(shape[-1]), size=shape[:-1])


def _pool_reference(w, rows, cols):
    """Max over blocks, written out with loops (block i covers floor(i*T/n) .. floor((i+1)*T/n))."""
    tq, tv = w.shape
    out = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            r0, r1 = i * tq // rows, (i + 1) * tq // rows
            c0, c1 = j * tv // cols, (j + 1) * tv // cols
            out[i, j] = w[r0:r1, c0:c1].max()
    return out


def _lut_index(rgb):
    """Nearest colormap entry of each (..., 3) colour."""
    d = ((np.asarray(rgb, "int64")[..., None, :] - LUT) ** 2).sum(-1)  # (..., 256)
    return d.argmin(-1)


def _expected_index(x):
    """The colormap entry matplotlib (and the page) uses for x in [0, 1]."""
    return np.minimum(255, np.floor(np.asarray(x) * 256)).astype(int)


def _cells_from_png(view, path):
    """Colours at the centre of every cell of every heatmap, read from a saved PNG."""
    fig = view.figure()  # the same figure save() drew, same dpi, same layout
    FigureCanvasAgg(fig).draw()  # lays the figure out as savefig does
    height = fig.bbox.height
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype="int64")
    assert pixels.shape[0] == round(height)
    out = []
    for ax in fig.axes:
        for image in ax.images:
            rows, cols = image.get_array().shape[:2]
            box = image.get_window_extent()
            xs = box.x0 + (np.arange(cols) + 0.5) * box.width / cols
            ys = height - (box.y1 - (np.arange(rows) + 0.5) * box.height / rows)
            out.append(pixels[np.floor(ys).astype(int)[:, None], np.floor(xs).astype(int)[None]])
    return out


# head view


def test_head_view_keeps_top_k_lines_above_threshold_per_query():
    w = _weights((3, 2, 12, 12))  # (L, H, T, T)
    view = head_view(w, tokens=[f"t{i}" for i in range(12)], top_k=4, threshold=0.05)
    for layer in range(3):
        lines = head_lines(view, layer=layer, heads=[0, 1])
        got = {(h, i, j): a for h, i, j, a in lines}
        expected = {}
        for h in range(2):
            for i in range(12):
                order = np.argsort(-w[layer, h, i], kind="stable")[:4]
                for j in order:
                    if w[layer, h, i, j] >= 0.05:
                        expected[(h, i, int(j))] = w[layer, h, i, j]
        assert set(got) == set(expected)
        for key, a in got.items():
            assert abs(a - max(expected[key], 1 / 255)) <= 0.5 / 255 + 1e-12


def test_head_view_hover_isolates_a_tokens_lines():
    w = _weights((2, 6, 6))
    view = head_view(w, top_k=6, threshold=0.0)
    everything = head_lines(view)
    assert len(everything) == 2 * 6 * 6
    outgoing = head_lines(view, hover=("q", 2))
    assert {i for _, i, _, _ in outgoing} == {2} and len(outgoing) == 12
    incoming = head_lines(view, hover=("k", 4))
    assert {j for _, _, j, _ in incoming} == {4} and len(incoming) == 12


def test_head_view_from_attention_maps_cross_attention():
    q = keras.Input((3, 4), name="q")
    v = keras.Input((5, 4), name="v")
    y = keras.layers.MultiHeadAttention(2, 4, name="cross")(q, v)
    model = keras.Model([q, v], y)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(2, 3, 4)).astype("float32"), rng.normal(size=(2, 5, 4))]
    maps = attention_maps(model, [inputs[0], inputs[1].astype("float32")])
    view = head_view(maps, query_tokens=list("abc"), key_tokens=list("vwxyz"), example=1)
    spec = view.data["layers"][0]
    assert (spec["h"], spec["tq"], spec["tv"]) == (2, 3, 5)
    lines = head_lines(view)
    for h, i, j, a in lines:
        assert abs(a - maps["cross"][1, h, i, j]) <= 0.5 / 255 + 1e-7


def test_head_view_static_svg_draws_the_same_lines():
    w = _weights((3, 7, 7), seed=1)
    view = head_view(w, tokens=list("abcdefg"), heads=[0, 2], top_k=3, threshold=0.1)
    svg = io.BytesIO()
    view.figure().savefig(svg, format="svg")
    root = ET.fromstring(svg.getvalue())
    ns = "{http://www.w3.org/2000/svg}"
    lines = head_lines(view)
    assert {h for h, *_ in lines} == {0, 2}
    for h in range(3):
        groups = [g for g in root.iter(f"{ns}g") if g.get("id") == f"attnkit-head-{h}"]
        want = sorted(a for hh, _, _, a in lines if hh == h)
        if h == 1:
            assert not groups  # an unselected head is not drawn
            continue
        (group,) = groups
        paths = list(group.iter(f"{ns}path"))
        assert len(paths) == len(want) > 0
        got = sorted(
            float(re.search(r"stroke-opacity: ([0-9.]+)", p.get("style"))[1]) for p in paths
        )
        levels = [(np.floor(a * (ALPHA_LEVELS - 1e-9)) + 0.5) / ALPHA_LEVELS for a in want]
        np.testing.assert_allclose(got, levels, atol=1e-6)


def test_head_view_page_is_self_contained():
    view = head_view(_weights((2, 4, 4)), tokens=["<b>", "&", "x", "</script>"])
    page = view.html
    assert page.startswith("<!doctype html>")
    assert '</script>"' not in page and "<\\/script>" in page  # a token cannot end the script
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched
    assert "<link" not in page and "@import" not in page
    frame = view._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and "&lt;!doctype html&gt;" in frame
    assert view.display() is False  # no IPython session is running


# model view


def test_model_view_stores_max_pooled_maps():
    w = _weights((2, 3, 40, 30), seed=2)  # (L, H, Tq, Tv)
    view = model_view(w, resolution=16)
    pooled = model_maps(view)
    assert len(pooled) == 2 and all(len(layer) == 3 for layer in pooled)
    for layer in range(2):
        for h in range(3):
            ref = _pool_reference(w[layer, h], 16, 16)
            np.testing.assert_allclose(pooled[layer][h], ref / ref.max(), atol=0.5 / 255 + 1e-12)
            assert view.data["layers"][layer]["maps"][h]["max"] == pytest.approx(ref.max())


def test_model_view_png_shows_the_maps(tmp_path):
    w = _weights((2, 3, 10, 10), seed=3)
    view = model_view(w)
    path = view.save(tmp_path / "model.png")
    cells = _cells_from_png(view, path)
    assert len(cells) == 6
    for n, colours in enumerate(cells):
        layer, h = divmod(n, 3)
        ref = w[layer, h] / w[layer, h].max()
        got = _lut_index(colours)
        # Quantized to bytes, then to the colormap: at most one entry apart.
        assert np.abs(got - _expected_index(ref)).max() <= 1


# matrix view


def test_matrix_view_png_svg_pdf_show_the_alignment(tmp_path):
    w = _weights((10, 14), seed=4)  # (Ty, Tx)
    view = matrix_view(w, list("1979-05-03"), list("3 may 1979    "), title="dates")
    np.testing.assert_allclose(matrix_maps(view)[0], w, rtol=1e-6)
    (colours,) = _cells_from_png(view, view.save(tmp_path / "m.png"))
    np.testing.assert_array_equal(_lut_index(colours), _expected_index(w / w.max()))

    svg = view.save(tmp_path / "m.svg").read_text()
    ET.fromstring(svg)  # well-formed
    # The heatmap is the image with our id (the colorbar is another image).
    (href,) = re.findall(r'xlink:href="data:image/png;base64,([^"]+)" id="attnkit-matrix"', svg)
    embedded = np.asarray(Image.open(io.BytesIO(base64.b64decode(href))).convert("RGB"))
    assert embedded.shape[:2] == (10, 14)  # the map at its own resolution, not resampled
    np.testing.assert_array_equal(_lut_index(embedded), _expected_index(w / w.max()))

    pdf = view.save(tmp_path / "m.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert re.search(rb"/Subtype\s*/Image", pdf)
    assert re.search(rb"/Width 14\b", pdf) and re.search(rb"/Height 10\b", pdf)


def test_matrix_view_pools_long_maps_and_offers_every_head():
    w = _weights((2, 600, 600), seed=5)  # (H, Tq, Tv)
    view = matrix_view(w, resolution=100)
    maps = matrix_maps(view)
    assert len(maps) == 2 and maps[0].shape == (100, 100)
    np.testing.assert_allclose(maps[1], _pool_reference(w[1], 100, 100), rtol=1e-6)
    assert [e["name"] for e in view.data["maps"]] == ["layer 0 · head 0", "layer 0 · head 1"]


def test_views_read_image_attention_from_attention_maps_layout():
    maps = {"spatial": _weights((2, 2, 3, 4, 3, 4), seed=6).reshape(2, 2, 3, 4, 3, 4)}
    view = matrix_view(maps, example=1)
    maps_drawn = matrix_maps(view)
    assert maps_drawn[0].shape == (12, 12)
    np.testing.assert_allclose(maps_drawn[1], maps["spatial"][1, 1].reshape(12, 12), rtol=1e-6)
    pooling = {"pool": _weights((3, 9), seed=7)}  # (B, Tv): one query
    assert matrix_maps(matrix_view(pooling))[0].shape == (1, 9)


def test_view_save_writes_html(tmp_path):
    view = model_view(_weights((2, 5, 5)))
    path = view.save(tmp_path / "sub" / "v.html")
    assert path.read_text(encoding="utf-8") == view.html == str(view)
    assert isinstance(view, View) and view.kind == "model"


# errors name the argument and the value


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: head_view(np.ones((2, 2, 2, 2, 2))),
            r"`maps` must be attention_maps' dict.*"
            r"Received: maps.shape=\(2, 2, 2, 2, 2\)",
        ),
        (
            lambda: head_view(np.ones((3, 3)), tokens=["a"]),
            r"`tokens` must hold one token per "
            r"position \(3\). Received: len\(tokens\)=1",
        ),
        (
            lambda: head_view(np.ones((3, 4)), tokens=list("abc")),
            r"`tokens` labels "
            r"self-attention.*Received: len\(tokens\)=3",
        ),
        (
            lambda: head_view(np.ones((3, 3)), top_k=0),
            r"`top_k` must be a positive integer. "
            r"Received: top_k=0",
        ),
        (
            lambda: head_view(np.ones((3, 3)), threshold=-1),
            r"`threshold` must be a number >= 0. "
            r"Received: threshold=-1",
        ),
        (
            lambda: head_view(np.ones((2, 3, 3)), heads=[2]),
            r"`heads` must be a list of head "
            r"indices below 2. Received: heads=\[2\]",
        ),
        (
            lambda: head_view({"a": np.ones((2, 3, 3))}, layer="b"),
            r"`layer` must be one of "
            r"\('a',\). Received: layer='b'",
        ),
        (
            lambda: model_view({"a": np.ones((2, 3, 3))}, example=2),
            r"`example` must be below "
            r"the batch size 2 of maps\['a'\]. Received: example=2",
        ),
        (
            lambda: model_view({"a": np.ones((2, 3, 3))}, layers=["x"]),
            r"`layers` must name "
            r"layers of `maps` \('a',\). Received: layers='x'",
        ),
        (
            lambda: model_view(-np.ones((3, 3))),
            r"`maps` must be non-negative weights. "
            r"Received: min\(layer 0\[0\]\)=-1.0",
        ),
        (lambda: model_view(np.full((3, 3), np.nan)), r"`maps` must be finite.*Received: "),
        (
            lambda: model_view(np.ones((3, 3)), resolution=0),
            r"`resolution` must be a positive "
            r"integer. Received: resolution=0",
        ),
        (
            lambda: matrix_view(np.ones((3, 3)), cmap="nope"),
            r"`cmap` must be a matplotlib "
            r"colormap name. Received: cmap='nope'",
        ),
        (lambda: matrix_view(np.array([["a"]])), r"`maps` must hold numbers. Received: "),
        (lambda: matrix_view({}), r"`maps` must hold at least one layer. Received: maps=\{\}"),
        (
            lambda: matrix_view(np.ones((3, 3))).save("v.gif"),
            r"`path` must end in .html, .png, "
            r".svg or .pdf. Received: path='v.gif'",
        ),
    ],
)
def test_view_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
