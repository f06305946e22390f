import re

import keras
import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from attnkit.viz import (
    highlight_text,
    plot_alignments,
    plot_attention,
    plot_image_attention,
    plot_sequence_attention,
    save_figure,
)


def _weights(shape, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(shape[-1]), size=shape[:-1])


def _heatmap_axes(fig):
    """The axes holding a heatmap (not colorbars), in drawing order."""
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


# plot_attention


def test_plot_attention_draws_the_matrix_with_labels_and_colorbar():
    w = _weights((3, 5))
    fig = plot_attention(w, ["q0", "q1", "q2"], list("abcde"), title="demo")
    assert isinstance(fig, Figure)
    (ax,) = _heatmap_axes(fig)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), w)
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcde")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["q0", "q1", "q2"]
    assert ax.get_title() == "demo"
    assert len(fig.axes) == 2  # heatmap + colorbar


def test_plot_attention_accepts_backend_tensors_and_single_query():
    w = _weights((2, 4))
    fig = plot_attention(keras.ops.convert_to_tensor(w.astype("float32")))
    np.testing.assert_allclose(
        np.asarray(_heatmap_axes(fig)[0].images[0].get_array()), w, rtol=1e-6
    )
    fig = plot_attention(w[0])  # (Tv,): one row
    assert np.asarray(_heatmap_axes(fig)[0].images[0].get_array()).shape == (1, 4)


def test_plot_attention_draws_into_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_attention(_weights((2, 2)), ax=ax) is fig
    assert ax.images


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": np.ones((2, 3, 4))}, r"Received: weights.shape=\(2, 3, 4\)"),
        (
            {"weights": np.ones((2, 3)), "query_labels": ["a"]},
            r"Received: len\(query_labels\)=1",
        ),
        (
            {"weights": np.ones((2, 3)), "key_labels": ["a", "b"]},
            r"Received: len\(key_labels\)=2",
        ),
        ({"weights": np.array([[0.5, np.nan]])}, r"NaN or inf.*Received: weights="),
        ({"weights": np.array([["a", "b"]])}, r"Received: weights.dtype=<U1"),
        ({"weights": np.ones((2, 3)), "ax": "left"}, r"Received: ax='left'"),
    ],
)
def test_plot_attention_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_attention(**kwargs)


# plot_alignments


def test_plot_alignments_one_panel_per_head_on_a_shared_scale():
    w = _weights((3, 2, 4))
    fig = plot_alignments(w, titles=["h0", "h1", "h2"], ncols=2, title="heads")
    axes = _heatmap_axes(fig)
    assert [ax.get_title() for ax in axes] == ["h0", "h1", "h2"]
    for ax, expected in zip(axes, w, strict=True):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), expected)
        assert ax.images[0].get_clim() == (w.min(), w.max())
    assert fig.get_suptitle() == "heads"
    assert sum(ax.get_visible() and ax.axison for ax in fig.axes if not ax.images) == 1  # colorbar


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": np.ones((2, 3))}, r"Received: weights.shape=\(2, 3\)"),
        ({"weights": np.ones((1, 2, 2, 3))}, r"weights\[0\].*Received: weights.shape"),
        (
            {"weights": np.ones((0, 2, 3))},
            r"at least one panel.*Received: weights.shape=\(0, 2, 3\)",
        ),
        ({"weights": np.ones((2, 2, 3)), "ncols": 0}, r"Received: ncols=0"),
        (
            {"weights": np.ones((2, 2, 3)), "titles": ["a"]},
            r"Received: len\(titles\)=1",
        ),
        (
            {"weights": np.ones((2, 2, 3)), "key_labels": ["a"]},
            r"Received: len\(key_labels\)=1",
        ),
    ],
)
def test_plot_alignments_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_alignments(**kwargs)


# plot_image_attention


def test_plot_image_attention_overlays_each_map_on_its_image():
    images = np.random.default_rng(0).random((3, 8, 8))
    maps = _weights((3, 16))  # flattened 4x4
    fig = plot_image_attention(images, maps, titles=["a", "b", "c"], ncols=2)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3
    for ax, image, attn in zip(axes, images, maps, strict=True):
        base, overlay = ax.images
        np.testing.assert_allclose(np.asarray(base.get_array()), image)
        np.testing.assert_allclose(np.asarray(overlay.get_array()), attn.reshape(4, 4))
        assert overlay.get_extent() == base.get_extent()
        # Unattended pixels stay see-through; the most attended is the most opaque.
        rgba = overlay.to_rgba(attn.reshape(4, 4), norm=True)
        assert rgba[..., 3].argmax() == attn.argmax()
        assert overlay.cmap(0.0)[3] == 0.0
    assert [ax.get_title() for ax in axes] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"images": np.ones((2, 8)), "weights": np.ones((2, 4))},
            r"Received: images.shape=\(2, 8\)",
        ),
        (
            {"images": np.ones((2, 8, 8)), "weights": np.ones((2, 5))},
            r"Received: weights.shape=\(2, 5\)",
        ),
        (
            {"images": np.ones((2, 8, 8)), "weights": np.ones((3, 4, 4))},
            r"Received: weights.shape=\(3, 4, 4\)",
        ),
        (
            {"images": np.ones((2, 8, 8)), "weights": np.ones((2, 4, 4)), "alpha": 2},
            r"Received: alpha=2",
        ),
        (
            {
                "images": np.ones((2, 8, 8)),
                "weights": np.ones((2, 4, 4)),
                "titles": ["a"],
            },
            r"Received: len\(titles\)=1",
        ),
        (
            {
                "images": np.ones((2, 8, 8)),
                "weights": np.ones((2, 4, 4)),
                "cmap": "nope",
            },
            r"Received: cmap='nope'",
        ),
    ],
)
def test_plot_image_attention_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_image_attention(**kwargs)


# plot_sequence_attention


def test_plot_sequence_attention_curves_and_marked_positions():
    w = _weights((2, 30))
    values = np.linspace(-1, 1, 60).reshape(2, 30)
    fig = plot_sequence_attention(w, highlight=[[3, 20], [5, 11]], values=values, titles=["a", "b"])
    panels = [ax for ax in fig.axes if ax.get_ylabel() == "attention"]
    assert len(panels) == 2
    for ax, row, marks in zip(panels, w, [[3, 20], [5, 11]], strict=True):
        np.testing.assert_allclose(ax.lines[0].get_ydata(), row)
        bands = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
        np.testing.assert_allclose(bands, marks)
    inputs = [ax for ax in fig.axes if ax.get_ylabel() == "input"]
    np.testing.assert_allclose(inputs[1].lines[0].get_ydata(), values[1])


def test_plot_sequence_attention_shared_marks_for_a_single_sequence():
    fig = plot_sequence_attention(_weights((10,)), highlight=[0, 9])
    (ax,) = fig.axes
    assert sorted(p.get_x() + p.get_width() / 2 for p in ax.patches) == [0, 9]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": np.ones((2, 3, 4))}, r"Received: weights.shape=\(2, 3, 4\)"),
        (
            {"weights": np.ones((2, 5)), "values": np.ones((2, 4))},
            r"Received: values.shape=\(2, 4\)",
        ),
        (
            {"weights": np.ones((2, 5)), "highlight": [[1], [2], [3]]},
            r"Received: len\(highlight\)=3",
        ),
        ({"weights": np.ones((1, 5)), "highlight": [5]}, r"Received: highlight=\[5\]"),
        (
            {"weights": np.ones((1, 5)), "highlight": [1.5]},
            r"Received: highlight=\[1.5\]",
        ),
        ({"weights": np.ones((2, 5)), "titles": ["a"]}, r"Received: len\(titles\)=1"),
    ],
)
def test_plot_sequence_attention_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_sequence_attention(**kwargs)


# save_figure


def test_save_figure_writes_a_decodable_png(tmp_path):
    fig = plot_attention(_weights((4, 6)))
    path = save_figure(fig, tmp_path / "nested" / "attention.png")
    assert path == tmp_path / "nested" / "attention.png"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.std() > 0  # not a blank image


@pytest.mark.parametrize(
    "args, match",
    [
        (("not a figure", "x.png"), r"Received: fig='not a figure'"),
        ((None, "x.png"), r"Received: fig=None"),
        (("FIG", 3), r"Received: path=3"),
        (("FIG", "attention.nope"), r"Received: path='attention.nope'"),
    ],
)
def test_save_figure_errors(args, match, tmp_path):
    fig = Figure()
    args = tuple(fig if a == "FIG" else a for a in args)
    with pytest.raises(ValueError, match=match):
        save_figure(*args)


def test_save_figure_rejects_bad_dpi(tmp_path):
    with pytest.raises(ValueError, match=r"Received: dpi=0"):
        save_figure(Figure(), tmp_path / "a.png", dpi=0)


# highlight_text


def test_highlight_text_escapes_and_shades_by_relative_weight():
    out = highlight_text(["<b>", "a&b", '"q"'], [0.2, 0.4, 0.0])
    assert "<b>" not in out.replace('<div class="attnkit-highlight"', "")
    assert "&lt;b&gt;" in out and "a&amp;b" in out and "&quot;q&quot;" in out
    alphas = [float(a) for a in re.findall(r"rgba\(255, 140, 0, ([0-9.]+)\)", out)]
    assert alphas == [0.5, 1.0, 0.0]
    assert out.count("<span") == 3


def test_highlight_text_all_zero_weights_gives_no_shading():
    out = highlight_text(["a", "b"], keras.ops.zeros((2,)))
    assert re.findall(r"rgba\([^)]*, ([0-9.]+)\)", out) == ["0.000", "0.000"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tokens": "abc", "weights": [1, 1, 1]}, r"Received: tokens='abc'"),
        ({"tokens": ["a", "b"], "weights": [1.0]}, r"Received: weights.shape=\(1,\)"),
        ({"tokens": ["a"], "weights": [[1.0]]}, r"Received: weights.shape=\(1, 1\)"),
        (
            {"tokens": ["a", "b"], "weights": [0.5, -0.1]},
            r"Received: min\(weights\)=-0.1",
        ),
        (
            {"tokens": ["a"], "weights": [1.0], "color": "nocolour"},
            r"Received: color='nocolour'",
        ),
    ],
)
def test_highlight_text_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        highlight_text(**kwargs)
