"""Keras layers built on ``attnkit.ops``."""
from attnkit.layers.attention import Attention as Attention
from attnkit.layers.additive_attention import AdditiveAttention as AdditiveAttention
from attnkit.layers.multi_head_attention import MultiHeadAttention as MultiHeadAttention
from attnkit.layers.mechanisms import LuongAttention as LuongAttention
from attnkit.layers.mechanisms import BahdanauAttention as BahdanauAttention
from attnkit.layers.attention_rnn_cell import AttentionRNNCell as AttentionRNNCell
