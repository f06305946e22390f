"""Attention over text as HTML."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from matplotlib.colors import to_rgb
from numpy.typing import ArrayLike

from attnkit.viz._arrays import to_numpy


def highlight_text(tokens: Sequence[Any], weights: ArrayLike, color: str = "#ff8c00") -> str:
    """Renders tokens as HTML, each shaded by its attention weight.

    A token's background opacity is its weight divided by the largest weight,
    so the most attended token is fully shaded whatever the sequence length.
    Tokens are HTML-escaped; each span's `title` holds the raw weight (shown on
    hover).

    Args:
        tokens: a sequence of `T` tokens (converted with `str`).
        weights: `(T,)` non-negative attention weights, e.g. one row of an
            attention matrix or an attention-pooling layer's weights.
        color: the shading colour, any matplotlib colour. Defaults to
            `"#ff8c00"`.

    Returns:
        An HTML fragment (`<div>` of `<span>`s), e.g. for
        `IPython.display.HTML` or a report file.

    Example:

    >>> from attnkit.viz import highlight_text
    >>> html = highlight_text(["the", "<cat>"], [0.25, 0.75])
    >>> "&lt;cat&gt;" in html
    True
    """
    if isinstance(tokens, str):
        raise ValueError(
            "Expected `tokens` to be a sequence of tokens, not one string. "
            f"Received: tokens={tokens!r}"
        )
    tokens = [str(t) for t in tokens]
    weights = to_numpy(weights, "weights")
    if weights.ndim != 1:
        raise ValueError(
            f"Expected `weights` of shape (T,). Received: weights.shape={weights.shape}"
        )
    if len(tokens) != weights.shape[0]:
        raise ValueError(
            f"Expected one weight per token ({len(tokens)}). "
            f"Received: weights.shape={weights.shape}"
        )
    if weights.size and weights.min() < 0:
        raise ValueError(
            f"Expected non-negative `weights`. Received: min(weights)={float(weights.min())!r}"
        )
    try:
        r, g, b = (round(255 * c) for c in to_rgb(color))
    except ValueError:
        raise ValueError(f"Expected a matplotlib colour. Received: color={color!r}") from None
    top = weights.max() if weights.size else 0.0
    spans = []
    for token, w in zip(tokens, weights, strict=True):
        alpha = w / top if top > 0 else 0.0
        spans.append(
            f'<span style="background-color: rgba({r}, {g}, {b}, {alpha:.3f}); '
            f'padding: 0 2px" title="{w:.4g}">{html.escape(token, quote=True)}</span>'
        )
    return '<div class="attnkit-highlight" style="line-height: 1.8">' + " ".join(spans) + "</div>"
