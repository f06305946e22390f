"""Attention plots (matplotlib, no display needed) and HTML text highlighting."""

from attnkit.viz.heatmap import plot_alignments as plot_alignments
from attnkit.viz.heatmap import plot_attention as plot_attention
from attnkit.viz.heatmap import plot_image_attention as plot_image_attention
from attnkit.viz.heatmap import plot_sequence_attention as plot_sequence_attention
from attnkit.viz.io import save_figure as save_figure
from attnkit.viz.text import highlight_text as highlight_text
