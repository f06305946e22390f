"""Pure attention math on ``keras.ops``: no weights, no layers."""

from attnkit.ops import mods as mods
from attnkit.ops.attention import attention as attention
from attnkit.ops.attention import attention_weights as attention_weights
from attnkit.ops.block_sparsity import BlockMask as BlockMask
from attnkit.ops.block_sparsity import block_mask as block_mask
from attnkit.ops.hard import argmax_weights as argmax_weights
from attnkit.ops.hard import gumbel_softmax_weights as gumbel_softmax_weights
from attnkit.ops.hard import topk_weights as topk_weights
from attnkit.ops.local import local_attention as local_attention
from attnkit.ops.local import local_weights as local_weights
from attnkit.ops.local import monotonic_positions as monotonic_positions
from attnkit.ops.local import predictive_positions as predictive_positions
from attnkit.ops.masks import causal_mask as causal_mask
from attnkit.ops.masks import combine_masks as combine_masks
from attnkit.ops.masks import padding_mask as padding_mask
from attnkit.ops.masks import sliding_window_mask as sliding_window_mask
from attnkit.ops.pooling import attention_pool as attention_pool
from attnkit.ops.pooling import feedforward_scores as feedforward_scores
from attnkit.ops.pooling import han_scores as han_scores
from attnkit.ops.pooling import pooling_weights as pooling_weights
from attnkit.ops.positions import qk_norm as qk_norm
from attnkit.ops.positions import rotary as rotary
from attnkit.ops.positions import (
    sinusoidal_position_encoding as sinusoidal_position_encoding,
)
from attnkit.ops.scores import additive_score as additive_score
from attnkit.ops.scores import cosine_score as cosine_score
from attnkit.ops.scores import dot_score as dot_score
from attnkit.ops.scores import scaled_dot_score as scaled_dot_score
from attnkit.ops.softmax import masked_softmax as masked_softmax
