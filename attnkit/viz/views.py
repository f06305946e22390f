"""Interactive attention views as self-contained HTML, each with a static export.

Three views, built from the output of ``attnkit.attention_maps(model, inputs)``
or from raw weight arrays:

- ``head_view``: one layer at a time; a line from each query token (left
  column) to each key token it attends to (right column), one colour per head,
  opacity = weight. Pick the layer and the heads; hover a token to keep only its
  lines (a query's outgoing lines, or a key's incoming ones).
- ``model_view``: the grid of layers x heads as small heatmaps; click one to
  enlarge it, hover the enlarged map to read a weight.
- ``matrix_view``: one map at a time as a large interactive heatmap with its
  query and key labels (seq2seq alignments, images, time series); hover a cell
  to read its weight and its labels.

Each returns a :class:`View`: ``view.html`` is the page (every script and style
inline, no network access, no CDN, so the file works offline or attached to a
report), ``view.save("v.html")`` writes it, ``view.save("v.png")`` (or ``.svg``,
``.pdf``) writes the static export of the same picture with matplotlib (no
browser), ``view.figure()`` returns that matplotlib figure, and in a Jupyter
notebook the view displays itself as the cell's value (``_repr_html_``) or with
``view.display()``.

Scale. The pages stay responsive at 1,024 tokens x 12 heads x 6 layers:

- everything is drawn on ``<canvas>`` elements, never as one DOM node per
  token, line or cell;
- the head view keeps, per query, at most ``top_k`` lines (its largest weights)
  and none below ``threshold``, and draws them in batches of equal opacity (32
  levels), so a redraw is a few hundred canvas strokes whatever the length;
- the model view stores each map max-pooled to at most ``resolution`` x
  ``resolution`` cells as bytes (8-bit, relative to the map's own largest
  weight), and draws a thumbnail with one ``putImageData``;
- the matrix view stores float32 weights, max-pooled beyond ``resolution``.

Max-pooling (not averaging) keeps sharp patterns (a diagonal, one attended
token) visible after downsampling. The static exports draw the same pooled or
filtered data as the page, so both show the same picture.

Weights layouts (from ``attention_maps``, with a batch axis; pick the example
with ``example=``): ``(B, Tv)`` pooling weights, ``(B, Tq, Tv)`` single-head
layers, ``(B, H, Tq, Tv)`` multi-head layers, ``(B, H, *q, *k)`` multi-axis
attention (e.g. images, ``(B, H, h, w, h, w)``, flattened to ``(H, h*w, h*w)``).
Raw weights (no batch axis): ``(Tq, Tv)``, ``(H, Tq, Tv)``, ``(L, H, Tq, Tv)``,
or a list of per-layer ``(H, Tq, Tv)`` / ``(Tq, Tv)`` arrays.
"""

from __future__ import annotations

import base64
import html as html_lib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure

from attnkit import _checks
from attnkit.viz import _assets

VIEWS = ("head", "model", "matrix")
STATIC_FORMATS = ("png", "svg", "pdf")
ALPHA_LEVELS = 32  # opacity levels the head view batches its lines into
_TAB = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#e7ba52",
]


def head_colors(n: int) -> list[str]:
    """``n`` distinct head colours: matplotlib's tab10 plus two, then evenly spaced hues."""
    if n <= len(_TAB):
        return _TAB[:n]
    return [to_hex(colormaps["hsv"](i / n)) for i in range(n)]


def colormap_lut(cmap: str = "viridis") -> np.ndarray:
    """The 256 RGB colours (uint8) both the pages and the static exports use."""
    if cmap not in colormaps:
        raise ValueError(f"`cmap` must be a matplotlib colormap name. Received: cmap={cmap!r}")
    rgba = colormaps[cmap](np.linspace(0.0, 1.0, 256))  # (256, RGBA)
    return np.round(rgba[:, :3] * 255).astype("uint8")  # (256, 3)


# ---------------------------------------------------------------------------
# Weights in, (name, (H, Tq, Tv)) layers out


class _Layer:
    """One layer's weights for one example: ``heads`` is ``(H, Tq, Tv)``."""

    def __init__(self, name, heads):
        self.name = name
        self.heads = heads  # (H, Tq, Tv), any float dtype; read head by head

    @property
    def shape(self):
        return self.heads.shape


def _as_array(x, name):
    if isinstance(x, np.ndarray):
        arr = x
    elif isinstance(x, (list, tuple, int, float)):
        arr = np.asarray(x)
    else:
        import keras

        arr = keras.ops.convert_to_numpy(x)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must hold numbers. Received: {name}.dtype={arr.dtype}")
    return arr


def _canonical(arr, name, batched):
    """``arr`` as ``(H, Tq, Tv)``; ``batched`` arrays already had their example picked."""
    shape = arr.shape
    if arr.ndim == 1:
        return arr[None, None, :]  # (1, 1, Tv): pooling weights, one query
    if arr.ndim == 2:
        return arr[None]  # (1, Tq, Tv)
    if arr.ndim == 3:
        return arr  # (H, Tq, Tv)
    if arr.ndim % 2 == 1:  # (H, *q, *k) with len(q) == len(k)
        k = (arr.ndim - 1) // 2
        q, v = math.prod(shape[1 : 1 + k]), math.prod(shape[1 + k :])
        return arr.reshape(shape[0], q, v)  # (H, Tq, Tv)
    if batched:  # (*q, *k), no heads
        k = arr.ndim // 2
        return arr.reshape(1, math.prod(shape[:k]), math.prod(shape[k:]))
    raise ValueError(
        f"`{name}` must have shape (Tq, Tv), (H, Tq, Tv) or (L, H, Tq, Tv) for raw weights. "
        f"Received: {name}.shape={shape}"
    )


def _layers(maps, example, layers) -> list[_Layer]:
    """The layers of ``maps`` (an ``attention_maps`` dict or raw weights) to show."""
    out = []
    if isinstance(maps, dict):
        if not maps:
            raise ValueError(f"`maps` must hold at least one layer. Received: maps={maps!r}")
        example = _checks.non_negative_int(example, "example")
        for key, value in maps.items():
            arr = _as_array(value, f"maps[{key!r}]")
            if arr.ndim < 2:
                raise ValueError(
                    f"`maps[{key!r}]` must have a batch axis (attention_maps' layout). "
                    f"Received: maps[{key!r}].shape={arr.shape}"
                )
            if example >= arr.shape[0]:
                raise ValueError(
                    f"`example` must be below the batch size {arr.shape[0]} of "
                    f"maps[{key!r}]. Received: example={example}"
                )
            out.append(_Layer(str(key), _canonical(arr[example], f"maps[{key!r}]", True)))
    elif isinstance(maps, (list, tuple)) and maps and not np.isscalar(maps[0]):
        arrays = [_as_array(m, f"maps[{i}]") for i, m in enumerate(maps)]
        if all(a.ndim == 1 for a in arrays):  # one (Tq, Tv) matrix as nested lists
            arrays = [np.asarray(arrays)]
        for i, arr in enumerate(arrays):
            if arr.ndim not in (2, 3):
                raise ValueError(
                    f"`maps[{i}]` must have shape (Tq, Tv) or (H, Tq, Tv). "
                    f"Received: maps[{i}].shape={arr.shape}"
                )
            out.append(_Layer(f"layer {i}", _canonical(arr, f"maps[{i}]", False)))
    else:
        arr = _as_array(maps, "maps")
        if arr.ndim == 4:
            out = [_Layer(f"layer {i}", arr[i]) for i in range(arr.shape[0])]
        elif arr.ndim in (2, 3):
            out = [_Layer("layer 0", _canonical(arr, "maps", False))]
        else:
            raise ValueError(
                "`maps` must be attention_maps' dict, or raw weights of shape (Tq, Tv), "
                f"(H, Tq, Tv) or (L, H, Tq, Tv). Received: maps.shape={arr.shape}"
            )
    if layers is not None:
        names = [layer.name for layer in out]
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise ValueError(f"`layers` must be a list of layer names. Received: layers={layers!r}")
        for n in layers:
            if n not in names:
                raise ValueError(
                    f"`layers` must name layers of `maps` {tuple(names)}. Received: layers={n!r}"
                )
        out = [out[names.index(n)] for n in layers]
    for layer in out:
        h, tq, tv = layer.shape
        if h == 0 or tq == 0 or tv == 0:
            raise ValueError(
                f"`maps` must not have empty axes. Received: {layer.name!r} of shape {layer.shape}"
            )
    return out


def _head(layer, h) -> np.ndarray:
    """Head ``h`` of ``layer`` as float ``(Tq, Tv)``, checked finite and >= 0.

    float64 stays float64; anything else becomes float32 (exact for float16,
    bfloat16 and float32 weights, and half the memory of float64).
    """
    w = np.asarray(layer.heads[h])
    w = w.astype("float64" if w.dtype == np.float64 else "float32", copy=False)
    if not np.all(np.isfinite(w)):
        raise ValueError(
            f"`maps` must be finite; layer {layer.name!r} head {h} holds NaN or inf. "
            f"Received: {layer.name}[{h}] with {int(np.sum(~np.isfinite(w)))} non-finite values"
        )
    if w.min() < 0:
        raise ValueError(
            "`maps` must be non-negative weights. "
            f"Received: min({layer.name}[{h}])={float(w.min())!r}"
        )
    return w


def _labels(tokens, n, name):
    if tokens is None:
        return [str(i) for i in range(n)]
    if isinstance(tokens, str):
        raise ValueError(
            f"`{name}` must be a sequence of tokens, not one string. Received: {name}={tokens!r}"
        )
    tokens = [str(t) for t in tokens]
    if len(tokens) != n:
        raise ValueError(
            f"`{name}` must hold one token per position ({n}). Received: len({name})={len(tokens)}"
        )
    return tokens


def _token_labels(layer, tokens, query_tokens, key_tokens):
    _, tq, tv = layer.shape
    if tokens is not None and (query_tokens is not None or key_tokens is not None):
        raise ValueError(
            "`tokens` (self-attention) and `query_tokens`/`key_tokens` are exclusive. "
            f"Received: tokens={tokens!r}, query_tokens={query_tokens!r}"
        )
    if tokens is not None:
        if tq != tv:
            raise ValueError(
                "`tokens` labels self-attention (Tq == Tv); pass `query_tokens` and "
                f"`key_tokens` for layer {layer.name!r} of shape (Tq, Tv)=({tq}, {tv}). "
                f"Received: len(tokens)={len(tokens)}"
            )
        query_tokens = key_tokens = tokens
    return (
        _labels(query_tokens, tq, "query_tokens" if tokens is None else "tokens"),
        _labels(key_tokens, tv, "key_tokens" if tokens is None else "tokens"),
    )


def pool_max(w: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``w`` (Tq, Tv) max-pooled to (rows, cols) blocks (block edges at ``floor(i*T/n)``)."""
    tq, tv = w.shape
    if tq % rows == 0 and tv % cols == 0:  # equal blocks: one reshape, one reduction
        w = w.reshape(rows, tq // rows, tv).max(axis=1)  # (rows, Tv)
        return w.reshape(rows, cols, tv // cols).max(axis=2)  # (rows, cols)
    r = (np.arange(rows) * tq) // rows  # block starts, strictly increasing as rows <= Tq
    c = (np.arange(cols) * tv) // cols
    return np.maximum.reduceat(np.maximum.reduceat(w, r, axis=0), c, axis=1)


def pooled_shape(tq: int, tv: int, resolution: int) -> tuple[int, int]:
    return min(tq, resolution), min(tv, resolution)


def _b64(arr) -> str:
    """Little-endian bytes of ``arr``, base64 (what the page's typed arrays read)."""
    little = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return base64.b64encode(little.tobytes()).decode("ascii")


def _quantize(w, top) -> np.ndarray:
    """Weights in [0, top] as uint8 0..255."""
    if top <= 0:
        return np.zeros(w.shape, "uint8")
    return np.clip(np.round(w * (255.0 / top)), 0, 255).astype("uint8")


# ---------------------------------------------------------------------------
# The View


class View:
    """An interactive attention view: HTML page plus a static matplotlib export.

    Built by ``head_view``, ``model_view`` or ``matrix_view``; not constructed
    directly.

    Attributes:
        kind: ``"head"``, ``"model"`` or ``"matrix"``.
        data: the JSON-ready dict the page reads (``window.ATTNKIT_DATA``).
        html: the self-contained page, as a string.
    """

    def __init__(self, kind, data, draw, height):
        self.kind = kind
        self.data = data
        self._draw = draw  # (Figure) -> None, the static picture
        self._height = height  # notebook iframe height in px
        self._html = None

    @property
    def html(self) -> str:
        if self._html is None:
            payload = json.dumps(self.data, separators=(",", ":")).replace("</", "<\\/")
            title = html_lib.escape(self.data.get("title") or f"attnkit {self.kind} view")
            self._html = _assets.PAGE.format(
                title=title, css=_assets.CSS, data=payload, js=_assets.JS
            )
        return self._html

    def __str__(self) -> str:
        return self.html

    def _repr_html_(self) -> str:
        # An iframe keeps each view's ids, styles and scripts apart from the
        # notebook's and from other views in it.
        return (
            f'<iframe srcdoc="{html_lib.escape(self.html, quote=True)}" '
            f'style="width: 100%; height: {self._height}px; border: 0" '
            'sandbox="allow-scripts"></iframe>'
        )

    def display(self) -> bool:
        """Shows the view in the running IPython/Jupyter session; False when none runs."""
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return False
        if get_ipython() is None:
            return False
        display(self)
        return True

    def figure(self) -> Figure:
        """The static picture as a new ``matplotlib.figure.Figure`` (no browser needed)."""
        fig = Figure(dpi=100, layout="constrained")
        self._draw(fig)
        return fig

    def save(self, path: str | os.PathLike[str], dpi: int = 100) -> Path:
        """Writes the page (``.html``) or the static export (``.png``, ``.svg``, ``.pdf``).

        Args:
            path: the file to write, its suffix picks the format; parent
                folders are created.
            dpi: resolution of a PNG. Defaults to `100`.

        Returns:
            The written path as a `pathlib.Path`.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"`path` must be a str or path. Received: path={path!r}")
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in ("html", "htm", *STATIC_FORMATS):
            raise ValueError(
                f"`path` must end in .html, .png, .svg or .pdf. Received: path={str(path)!r}"
            )
        _checks.positive_number(dpi, "dpi")
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt in ("html", "htm"):
            path.write_text(self.html, encoding="utf-8")
        else:
            # No bbox_inches="tight": pixels sit where the figure's axes say,
            # which is what lets a test read the maps back from the file.
            fig = self.figure()
            fig.savefig(path, dpi=dpi, format=fmt, metadata=_metadata(fmt))
        return path


def _metadata(fmt):
    # Fixed metadata: the same view gives the same bytes (no date in PDF/SVG).
    if fmt == "pdf":
        return {"CreationDate": None, "Producer": "attnkit", "Creator": "attnkit"}
    if fmt == "svg":
        return {"Date": None, "Creator": "attnkit"}
    return {"Software": "attnkit"}


# ---------------------------------------------------------------------------
# head view


def _top_lines(w, top_k, threshold):
    """Per query, the kept keys: (indices (Tq, k) int, quantized weights (Tq, k) uint8).

    Unused slots have weight 0 (and are dropped by the page and the export).
    """
    tq, tv = w.shape
    k = min(top_k, tv)
    if k < tv:
        idx = np.argpartition(-w, k - 1, axis=1)[:, :k]  # (Tq, k): the k largest
    else:
        idx = np.broadcast_to(np.arange(tv), (tq, tv)).copy()
    vals = np.take_along_axis(w, idx, axis=1)  # (Tq, k)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    # A kept line has at least opacity 1/255 (byte 0 marks a dropped one).
    q = np.clip(np.round(np.minimum(vals, 1.0) * 255), 1, 255).astype("uint8")
    q[(vals < threshold) | (vals <= 0)] = 0
    return idx.astype("uint16"), q


def head_lines(view, layer=None, heads=None, hover=None):
    """The lines a head view draws: a list of ``(head, query, key, weight)``.

    ``weight`` is the quantized opacity in (0, 1] (``byte / 255``), exactly what
    the page and the static export draw for the chosen ``layer`` index,
    ``heads`` and ``hover`` (``("q", i)`` or ``("k", j)``).
    """
    layer = view.data["layer"] if layer is None else layer
    spec = view.data["layers"][layer]
    heads = spec["selected"] if heads is None else heads
    idx = np.frombuffer(base64.b64decode(spec["idx"]), "<u2").reshape(spec["h"], spec["tq"], -1)
    val = np.frombuffer(base64.b64decode(spec["val"]), "u1").reshape(idx.shape)
    keep = np.zeros(val.shape, bool)  # (H, Tq, k)
    keep[list(heads)] = True
    keep &= val > 0
    if hover is not None and hover[0] == "q":
        keep[:, np.arange(spec["tq"]) != hover[1]] = False
    elif hover is not None:
        keep &= idx == hover[1]
    h, i, s = np.nonzero(keep)
    j = idx[h, i, s]
    a = val[h, i, s] / 255.0
    return list(zip(h.tolist(), i.tolist(), j.tolist(), a.tolist(), strict=True))


def head_view(
    maps: Any,
    tokens: Sequence[object] | None = None,
    *,
    query_tokens: Sequence[object] | None = None,
    key_tokens: Sequence[object] | None = None,
    layers: Sequence[int | str] | None = None,
    layer: int | str | None = None,
    heads: Sequence[int] | None = None,
    example: int = 0,
    top_k: int = 16,
    threshold: float = 0.01,
    title: str | None = None,
) -> View:
    """Head view: lines from each query token to the tokens it attends to.

    One layer at a time (a menu picks it), one colour per head (checkboxes
    pick them), line opacity = attention weight; hovering a query token keeps
    its outgoing lines only, hovering a key token its incoming ones. For
    self-attention pass ``tokens``; for cross-attention ``query_tokens`` (left
    column) and ``key_tokens`` (right column).

    Scale: per query at most ``top_k`` lines (its largest weights) and none
    whose weight is below ``threshold`` are kept (in the page and the static
    export alike), and lines are stroked in batches of 32 opacity levels on a
    canvas; at 1,024 tokens x 12 heads that is at most 196,608 segments in
    about 400 strokes per redraw. Token labels are drawn while rows are at
    least 9 px high; below that, hover shows the token's label.

    Args:
        maps: ``attention_maps``' dict, or raw weights (see the module
            docstring). Weights above 1 are drawn at full opacity.
        tokens: labels of the positions for self-attention. Defaults to
            `None` (position indices).
        query_tokens: labels of the queries. Defaults to `None`.
        key_tokens: labels of the keys. Defaults to `None`.
        layers: names of the layers to offer, in order. Defaults to `None`
            (all; every layer must match the token labels).
        layer: name of the layer shown first. Defaults to `None` (the first).
        heads: indices of the heads shown first. Defaults to `None` (all).
        example: the example of a batched ``maps`` dict. Defaults to `0`.
        top_k: most lines kept per query. Defaults to `16`.
        threshold: smallest weight drawn. Defaults to `0.01`.
        title: the page and figure title. Defaults to `None`.

    Returns:
        A `View`.

    Example:

    >>> import numpy as np
    >>> from attnkit.viz import head_view
    >>> w = np.random.default_rng(0).dirichlet(np.ones(4), size=(2, 4))  # (H, T, T)
    >>> view = head_view(w, tokens=["the", "cat", "sat", "down"])
    >>> view.html.startswith("<!doctype html>")
    True
    """
    top_k = _checks.positive_int(top_k, "top_k")
    threshold = _checks.non_negative_number(threshold, "threshold")
    found = _layers(maps, example, layers)
    names = [lay.name for lay in found]
    if layer is not None and layer not in names:
        raise ValueError(f"`layer` must be one of {tuple(names)}. Received: layer={layer!r}")
    first = names.index(layer) if layer is not None else 0
    specs = []
    for lay in found:
        h, tq, tv = lay.shape
        if tv > 65535:
            raise ValueError(
                f"`maps` must have at most 65535 keys for the head view. "
                f"Received: {lay.name!r} of shape {lay.shape}"
            )
        qtok, ktok = _token_labels(lay, tokens, query_tokens, key_tokens)
        k = min(top_k, tv)
        idx = np.zeros((h, tq, k), "uint16")
        val = np.zeros((h, tq, k), "uint8")
        for head in range(h):
            idx[head], val[head] = _top_lines(_head(lay, head), top_k, threshold)
        specs.append(
            {
                "name": lay.name,
                "h": h,
                "tq": tq,
                "tv": tv,
                "k": k,
                "idx": _b64(idx),
                "val": _b64(val),
                "qtok": qtok,
                "ktok": ktok,
                "selected": list(range(h)),
            }
        )
    if heads is not None:
        h0 = specs[first]["h"]
        if isinstance(heads, (int, str)) or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < h0 for x in heads
        ):
            raise ValueError(
                f"`heads` must be a list of head indices below {h0}. Received: heads={heads!r}"
            )
        specs[first]["selected"] = sorted(set(heads))
    data = {
        "kind": "head",
        "title": None if title is None else str(title),
        "layers": specs,
        "layer": first,
        "colors": head_colors(max(s["h"] for s in specs)),
        "alphaLevels": ALPHA_LEVELS,
        "topK": top_k,
        "threshold": threshold,
    }
    view = View("head", data, None, height=0)
    view._draw = lambda fig: _draw_head(view, fig)
    rows = max(max(s["tq"], s["tv"]) for s in specs)
    view._height = int(min(900, 140 + rows * _row_height(rows)))
    return view


def _row_height(rows):
    """Row height in px of the head view for ``rows`` tokens (the page uses the same)."""
    return max(2.0, min(20.0, 2400.0 / rows))


def _draw_head(view, fig):
    data = view.data
    spec = data["layers"][data["layer"]]
    tq, tv = spec["tq"], spec["tv"]
    rows = max(tq, tv)
    labels = rows <= 128
    fig.set_size_inches(6.0, min(40.0, max(3.0, 0.22 * rows + 1.2)))
    ax = fig.add_subplot()
    lines = head_lines(view)
    colors = [to_rgb(c) for c in data["colors"]]
    for h in spec["selected"]:
        segs = [[(0.0, -i), (1.0, -j)] for hh, i, j, _ in lines if hh == h]
        alphas = [a for hh, _, _, a in lines if hh == h]
        # Opacity quantized to the page's 32 levels, so both draw the same picture.
        alphas = [(math.floor(a * (ALPHA_LEVELS - 1e-9)) + 0.5) / ALPHA_LEVELS for a in alphas]
        rgba = [(*colors[h], a) for a in alphas]
        collection = LineCollection(segs, colors=rgba, linewidths=1.5 if rows <= 64 else 0.6)
        collection.set_gid(f"attnkit-head-{h}")
        ax.add_collection(collection)
    if labels:
        size = max(4.0, min(10.0, 260.0 / rows))
        for i, t in enumerate(spec["qtok"]):
            ax.text(-0.02, -i, t, ha="right", va="center", fontsize=size)
        for j, t in enumerate(spec["ktok"]):
            ax.text(1.02, -j, t, ha="left", va="center", fontsize=size)
    ax.set_xlim(-0.35 if labels else -0.02, 1.35 if labels else 1.02)
    ax.set_ylim(-(rows - 0.5), 0.5)
    ax.set_axis_off()
    heads = ", ".join(str(h) for h in spec["selected"])
    ax.set_title(data["title"] or f"{spec['name']} · heads {heads}", fontsize=10)


# ---------------------------------------------------------------------------
# model view


def model_view(
    maps: Any,
    tokens: Sequence[object] | None = None,
    *,
    query_tokens: Sequence[object] | None = None,
    key_tokens: Sequence[object] | None = None,
    layers: Sequence[int | str] | None = None,
    example: int = 0,
    resolution: int = 128,
    cmap: str = "viridis",
    title: str | None = None,
) -> View:
    """Model view: every layer x head as a small heatmap; click one to enlarge it.

    Rows are layers, columns heads. Each map is scaled to its own largest
    weight (so every thumbnail shows its pattern; the enlarged map and its
    hover read out the actual weights).

    Scale: each map is max-pooled to at most ``resolution`` x ``resolution``
    cells and stored as bytes; a thumbnail is one ``putImageData`` plus one
    scaled ``drawImage`` on a canvas. At 1,024 tokens x 12 heads x 6 layers and
    the default resolution the page holds 72 maps of 128 x 128 bytes (about
    1.6 MB of HTML) and draws them in well under a second in headless Chromium.

    Args:
        maps: ``attention_maps``' dict, or raw weights (module docstring).
        tokens: labels for self-attention, shown in the enlarged map when it is
            not pooled. Defaults to `None` (indices).
        query_tokens: query labels. Defaults to `None`.
        key_tokens: key labels. Defaults to `None`.
        layers: names of the layers to show, in order. Defaults to `None` (all).
        example: the example of a batched ``maps`` dict. Defaults to `0`.
        resolution: largest side of a stored map. Defaults to `128`.
        cmap: matplotlib colormap. Defaults to `"viridis"`.
        title: the page and figure title. Defaults to `None`.

    Returns:
        A `View`.

    Example:

    >>> import numpy as np
    >>> from attnkit.viz import model_view
    >>> w = np.random.default_rng(0).dirichlet(np.ones(6), size=(3, 2, 6))  # (L, H, T, T)
    >>> view = model_view(w)
    >>> len(view.data["layers"]), len(view.data["layers"][0]["maps"])
    (3, 2)
    """
    resolution = _checks.positive_int(resolution, "resolution")
    lut = colormap_lut(cmap)
    found = _layers(maps, example, layers)
    specs = []
    for lay in found:
        h, tq, tv = lay.shape
        qtok, ktok = _token_labels(lay, tokens, query_tokens, key_tokens)
        rows, cols = pooled_shape(tq, tv, resolution)
        entries = []
        for head in range(h):
            w = pool_max(_head(lay, head), rows, cols)  # (rows, cols)
            top = float(w.max())
            entries.append({"q": _b64(_quantize(w, top)), "max": top})
        specs.append(
            {
                "name": lay.name,
                "tq": tq,
                "tv": tv,
                "rows": rows,
                "cols": cols,
                "maps": entries,
                "qtok": qtok,
                "ktok": ktok,
            }
        )
    data = {
        "kind": "model",
        "title": None if title is None else str(title),
        "layers": specs,
        "lut": _b64(lut),
        "resolution": resolution,
    }
    view = View("model", data, None, height=0)
    view._draw = lambda fig: _draw_model(view, fig)
    view._height = int(min(900, 120 + 110 * len(specs)))
    return view


def model_maps(view) -> list[list[np.ndarray]]:
    """The pooled maps of a model view, as drawn: ``[layer][head]`` float arrays in [0, 1]."""
    out = []
    for spec in view.data["layers"]:
        shape = (spec["rows"], spec["cols"])
        out.append(
            [
                np.frombuffer(base64.b64decode(m["q"]), "u1").reshape(shape) / 255.0
                for m in spec["maps"]
            ]
        )
    return out


def _lut_cmap(view):
    from matplotlib.colors import ListedColormap

    lut = np.frombuffer(base64.b64decode(view.data["lut"]), "u1").reshape(256, 3)
    return ListedColormap(lut / 255.0)


def _draw_model(view, fig):
    data = view.data
    nrows = len(data["layers"])
    ncols = max(len(s["maps"]) for s in data["layers"])
    fig.set_size_inches(min(1.3 * ncols + 1.0, 20.0), min(1.3 * nrows + 0.8, 16.0))
    grid = fig.subplots(nrows, ncols, squeeze=False)
    cmap = _lut_cmap(view)
    pooled = model_maps(view)
    for r, spec in enumerate(data["layers"]):
        for c in range(ncols):
            ax = grid[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(spec["maps"]):
                ax.set_axis_off()
                continue
            ax.imshow(
                pooled[r][c], cmap=cmap, vmin=0.0, vmax=1.0, interpolation="none", aspect="auto"
            )
            ax.set_gid(f"attnkit-map-{r}-{c}")
            if r == 0 or ncols == 1:
                ax.set_title(f"head {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(spec["name"], fontsize=7)
    if data["title"]:
        fig.suptitle(data["title"], fontsize=10)


# ---------------------------------------------------------------------------
# matrix view


def matrix_view(
    maps: Any,
    query_tokens: Sequence[object] | None = None,
    key_tokens: Sequence[object] | None = None,
    *,
    layers: Sequence[int | str] | None = None,
    heads: Sequence[int] | None = None,
    example: int = 0,
    resolution: int = 512,
    cmap: str = "viridis",
    title: str | None = None,
) -> View:
    """Matrix view: one attention map as an interactive heatmap with its labels.

    For alignments (seq2seq: rows are output tokens, columns input tokens),
    images and time series. A menu picks the map (layer, head); hovering a
    cell outlines its row and column and shows the two labels and the weight.
    Colours run from 0 to the map's largest weight, as in the static export.

    Scale: weights are stored as float32, max-pooled to at most
    ``resolution`` cells a side; the map is one ``putImageData`` scaled onto a
    canvas, and hover redraws one overlay.

    Args:
        maps: ``attention_maps``' dict, or raw weights (module docstring).
        query_tokens: row labels. Defaults to `None` (indices).
        key_tokens: column labels. Defaults to `None` (indices).
        layers: names of the layers to offer. Defaults to `None` (all).
        heads: head indices to offer per layer. Defaults to `None` (all).
        example: the example of a batched ``maps`` dict. Defaults to `0`.
        resolution: largest side of a stored map. Defaults to `512`.
        cmap: matplotlib colormap. Defaults to `"viridis"`.
        title: the page and figure title. Defaults to `None`.

    Returns:
        A `View`.

    Example:

    >>> import numpy as np
    >>> from attnkit.viz import matrix_view
    >>> w = np.eye(3)[::-1]  # (Ty, Tx) alignment
    >>> view = matrix_view(w, query_tokens=list("cba"), key_tokens=list("abc"))
    >>> view.data["maps"][0]["rows"], view.data["maps"][0]["cols"]
    (3, 3)
    """
    resolution = _checks.positive_int(resolution, "resolution")
    lut = colormap_lut(cmap)
    found = _layers(maps, example, layers)
    entries = []
    for lay in found:
        h, tq, tv = lay.shape
        qtok, ktok = _token_labels(lay, None, query_tokens, key_tokens)
        chosen = range(h) if heads is None else heads
        if isinstance(chosen, (int, str)) or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < h for x in chosen
        ):
            raise ValueError(
                f"`heads` must be a list of head indices below {h}. Received: heads={heads!r}"
            )
        rows, cols = pooled_shape(tq, tv, resolution)
        for head in chosen:
            w = pool_max(_head(lay, head), rows, cols).astype("float32")
            name = lay.name if h == 1 else f"{lay.name} · head {head}"
            entries.append(
                {
                    "name": name,
                    "tq": tq,
                    "tv": tv,
                    "rows": rows,
                    "cols": cols,
                    "w": _b64(w),
                    "max": float(w.max()),
                    "qtok": qtok,
                    "ktok": ktok,
                }
            )
    data = {
        "kind": "matrix",
        "title": None if title is None else str(title),
        "maps": entries,
        "map": 0,
        "lut": _b64(lut),
        "resolution": resolution,
    }
    view = View("matrix", data, None, height=0)
    view._draw = lambda fig: _draw_matrix(view, fig)
    biggest = max(max(e["rows"], e["cols"]) for e in entries)
    view._height = int(min(900, 200 + _cell_size(biggest) * entries[0]["rows"]))
    return view


def matrix_maps(view) -> list[np.ndarray]:
    """The (pooled) float32 maps of a matrix view, as drawn."""
    return [
        np.frombuffer(base64.b64decode(e["w"]), "<f4").reshape(e["rows"], e["cols"])
        for e in view.data["maps"]
    ]


def _cell_size(n):
    """Pixels per cell of the matrix view for a map of ``n`` cells a side (as the page)."""
    return max(1, min(28, 720 // n))


def _draw_matrix(view, fig):
    data = view.data
    entry = data["maps"][data["map"]]
    w = matrix_maps(view)[data["map"]]
    rows, cols = w.shape
    pooled = (rows, cols) != (entry["tq"], entry["tv"])
    fig.set_size_inches(min(2.5 + 0.3 * cols, 14.0), min(1.8 + 0.3 * rows, 12.0))
    ax = fig.add_subplot()
    image = ax.imshow(
        w,
        cmap=_lut_cmap(view),
        vmin=0.0,
        vmax=max(entry["max"], 1e-12),
        interpolation="none",
        aspect="auto",
    )
    image.set_gid("attnkit-matrix")
    if not pooled and cols <= 80:
        ax.set_xticks(range(cols), entry["ktok"], rotation=90, fontsize=7)
    if not pooled and rows <= 80:
        ax.set_yticks(range(rows), entry["qtok"], fontsize=7)
    ax.set_xlabel("key" + (f" (max-pooled {entry['tv']} → {cols})" if pooled else ""))
    ax.set_ylabel("query" + (f" (max-pooled {entry['tq']} → {rows})" if pooled else ""))
    ax.set_title(data["title"] or entry["name"], fontsize=10)
    fig.colorbar(image, ax=ax)
