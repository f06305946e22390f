"""Keras layers built on ``attnkit.ops``."""

from attnkit.layers.additive_attention import AdditiveAttention as AdditiveAttention
from attnkit.layers.attention import Attention as Attention
from attnkit.layers.attention_pooling import AttentionPooling as AttentionPooling
from attnkit.layers.attention_rnn_cell import AttentionRNNCell as AttentionRNNCell
from attnkit.layers.bahdanau_attention import BahdanauAttention as BahdanauAttention
from attnkit.layers.forward_attention import ForwardAttention as ForwardAttention
from attnkit.layers.grouped_query_attention import (
    GroupedQueryAttention as GroupedQueryAttention,
)
from attnkit.layers.grouped_query_attention import (
    GroupQueryAttention as GroupQueryAttention,
)
from attnkit.layers.hard_attention import HardAttention as HardAttention
from attnkit.layers.local_attention import LocalAttention as LocalAttention
from attnkit.layers.location_sensitive_attention import (
    LocationSensitiveAttention as LocationSensitiveAttention,
)
from attnkit.layers.luong_attention import LuongAttention as LuongAttention
from attnkit.layers.monotonic_attention import MonotonicAttention as MonotonicAttention
from attnkit.layers.multi_head_attention import MultiHeadAttention as MultiHeadAttention
from attnkit.layers.position_embeddings import RotaryEmbedding as RotaryEmbedding
from attnkit.layers.position_embeddings import (
    SinusoidalPositionEncoding as SinusoidalPositionEncoding,
)
