"""Attention heatmaps with matplotlib.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``: no
display or GUI backend is needed (rendering goes through Agg), nothing is kept
in pyplot's global figure list, and in Jupyter the returned figure shows as the
cell's value. Shape legend: Tq query length, Tv key/value length, N panels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from attnkit.viz._arrays import check_labels, check_positive_int, to_numpy


def _draw(ax, weights, query_labels, key_labels, title, cmap, vmin, vmax):
    image = ax.imshow(
        weights, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax
    )
    if key_labels is not None:
        ax.set_xticks(range(len(key_labels)), key_labels, rotation=90)
    if query_labels is not None:
        ax.set_yticks(range(len(query_labels)), query_labels)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title is not None:
        ax.set_title(str(title))
    return image


def plot_attention(
    weights: ArrayLike,
    query_labels: Sequence[object] | None = None,
    key_labels: Sequence[object] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Draws one attention matrix as a heatmap with a colorbar.

    Rows are queries, columns are keys: cell (i, j) is how much query i attends
    to key j.

    Args:
        weights: attention weights of shape `(Tq, Tv)`, or `(Tv,)` for a
            single query such as an attention-pooling layer's weights. A NumPy
            array, nested list or backend tensor.
        query_labels: one label per query (row). Defaults to `None` (indices).
        key_labels: one label per key (column). Defaults to `None` (indices).
        ax: a matplotlib `Axes` to draw into; its figure is returned. Defaults
            to `None` (a new figure).
        title: the axes title. Defaults to `None`.
        cmap: matplotlib colormap name. Defaults to `"viridis"`.
        vmin: value mapped to the bottom of the colormap. Defaults to `None`
            (the smallest weight).
        vmax: value mapped to the top of the colormap. Defaults to `None`
            (the largest weight).

    Returns:
        The `matplotlib.figure.Figure` holding the heatmap.

    Example:

    >>> import numpy as np
    >>> from attnkit.viz import plot_attention, save_figure
    >>> w = np.full((2, 3), 1 / 3)
    >>> fig = plot_attention(w, ["a", "b"], ["x", "y", "z"], title="uniform")
    >>> path = save_figure(fig, "/tmp/attention.png")
    """
    weights = to_numpy(weights, "weights")
    if weights.ndim == 1:
        weights = weights[None, :]  # (1, Tv)
    if weights.ndim != 2:
        raise ValueError(
            "Expected `weights` of shape (Tq, Tv) or (Tv,). "
            f"Received: weights.shape={weights.shape}"
        )
    if ax is not None and not isinstance(ax, Axes):
        raise ValueError(f"Expected `ax` to be a matplotlib Axes. Received: ax={ax!r}")
    query_labels = check_labels(query_labels, weights.shape[0], "query_labels", "query")
    key_labels = check_labels(key_labels, weights.shape[1], "key_labels", "key")
    if ax is None:
        tq, tv = weights.shape
        fig = Figure(figsize=(min(2.0 + 0.35 * tv, 16.0), min(1.5 + 0.35 * tq, 12.0)))
        ax = fig.add_subplot()
    fig = ax.figure  # type: ignore[assignment]  # a given Axes may sit in a SubFigure
    image = _draw(ax, weights, query_labels, key_labels, title, cmap, vmin, vmax)
    fig.colorbar(image, ax=ax)
    return fig


def plot_alignments(
    weights: ArrayLike,
    query_labels: Sequence[object] | None = None,
    key_labels: Sequence[object] | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    title: str | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Draws several attention matrices (heads, decoding steps, examples) in a grid.

    All panels share one colour scale and one colorbar, so panels compare
    directly.

    Args:
        weights: attention weights of shape `(N, Tq, Tv)`, e.g. one example's
            `(H, Tq, Tv)` multi-head weights, or a list of `N` equally shaped
            `(Tq, Tv)` matrices.
        query_labels: one label per query. Defaults to `None`.
        key_labels: one label per key. Defaults to `None`.
        titles: one title per panel. Defaults to `None` (`"0"`, `"1"`, ...).
        ncols: panels per row. Defaults to `4`.
        title: the figure title. Defaults to `None`.
        cmap: matplotlib colormap name. Defaults to `"viridis"`.
        vmin: bottom of the shared colour scale. Defaults to `None` (the
            smallest weight over all panels).
        vmax: top of the shared colour scale. Defaults to `None` (the largest).

    Returns:
        The `matplotlib.figure.Figure` holding the grid.

    Example:

    >>> import numpy as np
    >>> from attnkit.viz import plot_alignments
    >>> heads = np.random.default_rng(0).dirichlet(np.ones(5), size=(4, 3))
    >>> fig = plot_alignments(heads, titles=[f"head {h}" for h in range(4)])
    """
    weights = to_numpy(weights, "weights")
    if weights.ndim != 3:
        raise ValueError(
            "Expected `weights` of shape (N, Tq, Tv); for a batch of multi-head "
            "weights (B, H, Tq, Tv) pass one example, e.g. `weights[0]`. "
            f"Received: weights.shape={weights.shape}"
        )
    n, tq, tv = weights.shape
    if n == 0:
        raise ValueError(f"Expected at least one panel. Received: weights.shape={weights.shape}")
    ncols = check_positive_int(ncols, "ncols")
    query_labels = check_labels(query_labels, tq, "query_labels", "query")
    key_labels = check_labels(key_labels, tv, "key_labels", "key")
    if titles is None:
        titles = [str(i) for i in range(n)]
    titles = check_labels(titles, n, "titles", "panel")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    vmin = float(weights.min()) if vmin is None else vmin
    vmax = float(weights.max()) if vmax is None else vmax
    panel_w = min(1.0 + 0.3 * tv, 6.0)
    panel_h = min(1.0 + 0.3 * tq, 5.0)
    fig = Figure(figsize=(panel_w * ncols + 1.0, panel_h * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    image: Any = None
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        image = _draw(ax, weights[i], query_labels, key_labels, titles[i], cmap, vmin, vmax)
    fig.colorbar(image, ax=list(axes[:n]))
    if title is not None:
        fig.suptitle(str(title))
    return fig


def plot_image_attention(
    images: ArrayLike,
    weights: ArrayLike,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    alpha: float = 0.6,
    cmap: str = "jet",
    title: str | None = None,
) -> Figure:
    """Draws images with an attention map laid over each.

    Each map is stretched over its whole image with bilinear interpolation, so
    a map at a coarser resolution than the image (a feature map's positions)
    lines up with the pixels it summarises.

    Args:
        images: `(N, height, width)` grayscale or `(N, height, width, C)` images
            with C = 3 or 4.
        weights: `(N, h, w)` attention over each image's positions, or `(N, h*w)`
            flattened row-major when `h == w` (e.g. attention pooling over a
            square feature map).
        titles: one title per image. Defaults to `None` (no titles).
        ncols: images per row. Defaults to `4`.
        alpha: opacity of the overlay where attention is highest, in [0, 1];
            opacity falls linearly to 0 where attention is 0, so unattended
            pixels show the image unchanged. Defaults to `0.6`.
        cmap: matplotlib colormap of the overlay (colour scaled per image from
            0 to its largest weight). Defaults to `"jet"`.
        title: the figure title. Defaults to `None`.

    Returns:
        The `matplotlib.figure.Figure` holding the grid.

    Example:

    >>> import numpy as np
    >>> from attnkit.viz import plot_image_attention
    >>> images = np.random.default_rng(0).random((2, 8, 8))
    >>> maps = np.full((2, 4, 4), 1 / 16)
    >>> fig = plot_image_attention(images, maps, titles=["a", "b"])
    """
    images = to_numpy(images, "images")
    weights = to_numpy(weights, "weights")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise ValueError(
            "Expected `images` of shape (N, height, width) or (N, height, width, 3|4). "
            f"Received: images.shape={images.shape}"
        )
    if weights.ndim == 2:
        side = math.isqrt(weights.shape[1])
        if side * side != weights.shape[1]:
            raise ValueError(
                "Expected flattened `weights` (N, h*w) over a square map. "
                f"Received: weights.shape={weights.shape}"
            )
        weights = weights.reshape(weights.shape[0], side, side)  # (N, h, w)
    if weights.ndim != 3:
        raise ValueError(
            "Expected `weights` of shape (N, h, w) or (N, h*w). "
            f"Received: weights.shape={weights.shape}"
        )
    if weights.shape[0] != images.shape[0]:
        raise ValueError(
            f"Expected one attention map per image ({images.shape[0]}). "
            f"Received: weights.shape={weights.shape}"
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"Expected `alpha` in [0, 1]. Received: alpha={alpha!r}")
    n = images.shape[0]
    if n == 0:
        raise ValueError(f"Expected at least one image. Received: images.shape={images.shape}")
    ncols = min(check_positive_int(ncols, "ncols"), n)
    if titles is not None:
        titles = check_labels(titles, n, "titles", "image")
    nrows = math.ceil(n / ncols)
    if cmap not in colormaps:
        raise ValueError(f"Expected a matplotlib colormap name. Received: cmap={cmap!r}")
    colors = colormaps[cmap](np.linspace(0.0, 1.0, 256))  # (256, RGBA)
    colors[:, 3] = np.linspace(0.0, float(alpha), 256)
    overlay_cmap = ListedColormap(colors)
    fig = Figure(
        figsize=(1.8 * ncols, 1.9 * nrows + (0.4 if title else 0.0)),
        layout="constrained",
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        height, width = images.shape[1:3]
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)
        ax.imshow(images[i], cmap="gray_r" if images.ndim == 3 else None, extent=extent)
        ax.imshow(
            weights[i],
            cmap=overlay_cmap,
            vmin=0.0,
            vmax=max(float(weights[i].max()), 1e-12),
            interpolation="bilinear",
            extent=extent,
        )
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if title is not None:
        fig.suptitle(str(title))
    return fig


def plot_sequence_attention(
    weights: ArrayLike,
    highlight: Sequence[Any] | None = None,
    values: ArrayLike | None = None,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    color: str = "tab:blue",
) -> Figure:
    """Draws attention over a long sequence as a curve, one panel per sequence.

    For sequences too long for a heatmap's labels, e.g. attention pooling over
    hundreds of steps. Positions in `highlight` (the ones that matter for the
    task) are marked with red bands, and optional input values are drawn in grey
    on a second axis.

    Args:
        weights: `(T,)` or `(N, T)` attention weights over time.
        highlight: positions to mark: a list of indices for all panels, or one
            list per panel. Defaults to `None`.
        values: `(T,)` or `(N, T)` input values to draw under the weights.
            Defaults to `None`.
        titles: one title per panel. Defaults to `None`.
        title: the figure title. Defaults to `None`.
        color: colour of the attention curve. Defaults to `"tab:blue"`.

    Returns:
        The `matplotlib.figure.Figure` holding the panels.

    Example:

    >>> import numpy as np
    >>> from attnkit.viz import plot_sequence_attention
    >>> w = np.full((2, 50), 0.02)
    >>> fig = plot_sequence_attention(w, highlight=[[3, 30], [5, 40]])
    """
    weights = to_numpy(weights, "weights")
    if weights.ndim == 1:
        weights = weights[None, :]  # (1, T)
    if weights.ndim != 2 or weights.shape[1] == 0:
        raise ValueError(
            f"Expected `weights` of shape (T,) or (N, T). Received: weights.shape={weights.shape}"
        )
    n, t = weights.shape
    if n == 0:
        raise ValueError(f"Expected at least one sequence. Received: weights.shape={weights.shape}")
    if values is not None:
        values = to_numpy(values, "values")
        if values.ndim == 1:
            values = values[None, :]
        if values.shape != weights.shape:
            raise ValueError(
                f"Expected `values` shaped like `weights` {weights.shape}. "
                f"Received: values.shape={values.shape}"
            )
    if highlight is None:
        marks: list[Any] = [[] for _ in range(n)]
    else:
        highlight = list(highlight)
        per_panel = len(highlight) > 0 and all(np.ndim(h) == 1 for h in highlight)
        marks = [list(h) for h in highlight] if per_panel else [highlight] * n
        if len(marks) != n:
            raise ValueError(
                f"Expected one list of positions per sequence ({n}). "
                f"Received: len(highlight)={len(marks)}"
            )
        for row in marks:
            for pos in row:
                if (
                    isinstance(pos, bool)
                    or not isinstance(pos, (int, np.integer))
                    or not 0 <= pos < t
                ):
                    raise ValueError(
                        f"Expected positions in highlight to be integers in [0, {t}). "
                        f"Received: highlight={highlight!r}"
                    )
    if titles is not None:
        titles = check_labels(titles, n, "titles", "sequence")
    fig = Figure(figsize=(9.0, 1.9 * n + (0.4 if title else 0.0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n, 1, squeeze=False)).ravel()
    steps = np.arange(t)
    for i, ax in enumerate(axes):
        if values is not None:
            twin = ax.twinx()
            twin.plot(steps, values[i], color="0.7", linewidth=0.8, zorder=0)
            twin.set_ylabel("input", color="0.5")
        for pos in marks[i]:
            ax.axvspan(pos - 0.5, pos + 0.5, color="tab:red", alpha=0.3, linewidth=0)
        ax.plot(steps, weights[i], color=color, linewidth=1.2)
        ax.set_xlim(-0.5, t - 0.5)
        ax.set_ylim(bottom=0.0)
        ax.set_ylabel("attention")
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    axes[-1].set_xlabel("time step")
    if title is not None:
        fig.suptitle(str(title))
    return fig
