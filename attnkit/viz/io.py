"""Writing figures to disk."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Saves a figure (PNG, SVG, PDF, ... from the suffix), creating parent folders.

    Args:
        fig: a `matplotlib.figure.Figure`, e.g. from `plot_attention`.
        path: the file to write; its suffix picks the format.
        dpi: resolution for raster formats. Defaults to `120`.

    Returns:
        The written path as a `pathlib.Path`.
    """
    if not isinstance(fig, Figure):
        raise ValueError(f"Expected a matplotlib Figure. Received: fig={fig!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"Expected `path` to be a str or path. Received: path={path!r}")
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        supported = ", ".join(sorted(fig.canvas.get_supported_filetypes()))
        raise ValueError(
            f"Expected a file suffix naming an image format ({supported}). "
            f"Received: path={str(path)!r}"
        )
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or dpi <= 0:
        raise ValueError(f"Expected a positive `dpi`. Received: dpi={dpi!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
