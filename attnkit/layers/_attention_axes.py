"""The ``attention_axes`` layout of multi-head attention, as pure functions.

Projected tensors come as (B, d_1..d_n, H, D); the attention core wants
(B', T, H, D) with B' = B x (the axes not attended over) and T the attended
axes flattened in row-major order. ``AttentionLayout`` maps tensors, masks and
scores between the two; for the standard layout (attention over axis 1) every
map is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import ops


@dataclass(frozen=True)
class AttentionLayout:
    """Axes of a (B, d_1..d_n, F) input: ``others`` act as batch axes, ``attn``
    are attended over jointly."""

    others: tuple
    attn: tuple

    @classmethod
    def from_axes(cls, attention_axes, input_rank):
        """``attention_axes`` (None = all axes but batch and features) of an input
        of rank ``input_rank``; a ValueError for axes out of range or repeated."""
        n = input_rank - 2  # axes between batch and features
        axes = tuple(range(1, n + 1)) if attention_axes is None else attention_axes
        normalized = tuple(a if a >= 0 else input_rank + a for a in axes)
        if any(not 1 <= a <= n for a in normalized) or len(set(normalized)) != len(normalized):
            raise ValueError(
                "`attention_axes` must be distinct axes of the input other than the "
                f"batch and feature axes (1 to {n}, or negative). "
                f"Received: attention_axes={attention_axes}"
            )
        attn = tuple(sorted(normalized))
        return cls(tuple(a for a in range(1, n + 1) if a not in attn), attn)

    @property
    def standard(self):
        """Attention over axis 1 of (B, T, F): the core's own layout."""
        return self.others == () and self.attn == (1,)

    def to_core(self, x):
        """(B, d_1..d_n, H, D) -> (B', T, H, D)."""
        if self.standard:
            return x
        rank = len(x.shape)
        x = ops.transpose(x, (0, *self.others, *self.attn, rank - 2, rank - 1))
        t = int(np.prod([x.shape[1 + len(self.others) + i] for i in range(len(self.attn))]))
        return ops.reshape(x, (-1, t, x.shape[-2], x.shape[-1]))  # (B', T, H, D)

    def from_core(self, out, query_shape, batch):
        """(B', Tq, H, Dv) -> (B, d_1..d_n, H, Dv), the query's axes."""
        if self.standard:
            return out
        sizes_o = [query_shape[a] for a in self.others]
        sizes_a = [query_shape[a] for a in self.attn]
        out = ops.reshape(out, (batch, *sizes_o, *sizes_a, out.shape[-2], out.shape[-1]))
        perm = (0, *self.others, *self.attn)
        inverse = [0] * len(perm)
        for i, a in enumerate(perm):
            inverse[a] = i
        rank = len(out.shape)
        return ops.transpose(out, (*inverse, rank - 2, rank - 1))

    def scores_from_core(self, scores, query_shape, key_shape, batch):
        """(B', H, Tq, Tv) -> (B, <others>, H, <query attn axes>, <key attn axes>)."""
        if self.standard:
            return scores  # (B, H, Tq, Tv)
        shape = (
            batch,
            *[query_shape[a] for a in self.others],
            scores.shape[1],
            *[query_shape[a] for a in self.attn],
            *[key_shape[a] for a in self.attn],
        )
        return ops.reshape(scores, shape)

    def flat_padding(self, mask):
        """A padding mask (B, d_1..d_n) -> (B', T); None stays None."""
        if mask is None:
            return None
        mask = ops.cast(mask, "bool")
        if self.standard:
            return mask
        mask = ops.transpose(mask, (0, *self.others, *self.attn))
        t = int(np.prod([mask.shape[1 + len(self.others) + i] for i in range(len(self.attn))]))
        return ops.reshape(mask, (-1, t))

    def attention_mask(self, attention_mask, batch, query_shape, key_shape):
        """An ``attention_mask`` broadcastable to the scores (B, <others>, [H,] <Aq>,
        <Ak>) -> bool (B', H|1, Tq, Tv)."""
        attention_mask = ops.cast(attention_mask, "bool")
        scores_rank = 2 + len(self.others) + 2 * len(self.attn)
        rank = len(attention_mask.shape)
        if not 2 <= rank <= scores_rank:
            raise ValueError(
                f"`attention_mask` must have rank 2 to {scores_rank} (broadcastable to "
                "the attention scores). "
                f"Received: attention_mask.shape={tuple(attention_mask.shape)}"
            )
        for _ in range(scores_rank - rank):  # head axis (then batch axes) added
            attention_mask = ops.expand_dims(attention_mask, -2 * len(self.attn) - 1)
        if self.standard:
            return attention_mask  # (B|1, H|1, Tq, Tv)
        heads = attention_mask.shape[1 + len(self.others)]
        target = [batch, *[query_shape[a] for a in self.others], heads]
        target += [query_shape[a] for a in self.attn] + [key_shape[a] for a in self.attn]
        attention_mask = ops.broadcast_to(attention_mask, target)
        tq = int(np.prod([query_shape[a] for a in self.attn]))
        tv = int(np.prod([key_shape[a] for a in self.attn]))
        return ops.reshape(attention_mask, (-1, heads, tq, tv))  # (B', H|1, Tq, Tv)
