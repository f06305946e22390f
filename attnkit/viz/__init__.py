"""Attention plots (matplotlib, no display needed), HTML text highlighting and interactive views."""

from attnkit._optional import require

# Every view and plot draws with matplotlib (the views also take their colours from
# it): one check here, before any submodule imports it, covers the whole package.
require("matplotlib", "attnkit.viz")

from attnkit.viz.heatmap import plot_alignments as plot_alignments  # noqa: E402
from attnkit.viz.heatmap import plot_attention as plot_attention  # noqa: E402
from attnkit.viz.heatmap import plot_image_attention as plot_image_attention  # noqa: E402
from attnkit.viz.heatmap import plot_sequence_attention as plot_sequence_attention  # noqa: E402
from attnkit.viz.io import save_figure as save_figure  # noqa: E402
from attnkit.viz.text import highlight_text as highlight_text  # noqa: E402
from attnkit.viz.views import View as View  # noqa: E402
from attnkit.viz.views import head_view as head_view  # noqa: E402
from attnkit.viz.views import matrix_view as matrix_view  # noqa: E402
from attnkit.viz.views import model_view as model_view  # noqa: E402
