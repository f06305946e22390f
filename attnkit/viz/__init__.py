"""Attention plots (matplotlib, no display needed), HTML text highlighting and interactive views."""

from attnkit.viz.heatmap import plot_alignments as plot_alignments
from attnkit.viz.heatmap import plot_attention as plot_attention
from attnkit.viz.heatmap import plot_image_attention as plot_image_attention
from attnkit.viz.heatmap import plot_sequence_attention as plot_sequence_attention
from attnkit.viz.io import save_figure as save_figure
from attnkit.viz.text import highlight_text as highlight_text
from attnkit.viz.views import View as View
from attnkit.viz.views import head_view as head_view
from attnkit.viz.views import matrix_view as matrix_view
from attnkit.viz.views import model_view as model_view
