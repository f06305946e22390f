"""Block masks: a ``mask_mod`` summarised once per block grid (FlexAttention's
``create_block_mask``, Dong et al. 2024).

The chunked path visits (query block, key block) pairs. For a ``mask_mod``
that hides most pairs (packed documents, sliding windows, prefix-LM), knowing
before the loop which blocks are empty (skip them: no product, no exp) and
which are full (skip the mask work) makes the cost follow the visible area.
:func:`block_mask` evaluates the mask one query block at a time (O(N·block)
memory, never the N×N mask) and keeps, per block, the class shared by every
batch row and head: EMPTY if every entry is masked, FULL if none is, PARTIAL
otherwise. The result is a small constant, reusable across calls and layers
with the same sizes; pass it as ``attnkit.ops.attention(..., block_mask=bm)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from keras import ops

from attnkit import _checks
from attnkit.ops import modding

BLOCK_EMPTY, BLOCK_PARTIAL, BLOCK_FULL = 0, 1, 2
DEFAULT_BLOCK_SIZE = (256, 256)


@dataclass(frozen=True)
class BlockMask:
    """A ``mask_mod`` with its per-block classes (hashable: a static argument)."""

    mask_mod: object
    batch: int
    heads: int
    q_len: int
    kv_len: int
    block_size: tuple  # (query_block, key_block), as the chunked path uses them
    table: tuple  # (nq, nk) of BLOCK_EMPTY / BLOCK_PARTIAL / BLOCK_FULL
    offset: int

    @property
    def sparsity(self):
        """Share of the blocks skipped entirely."""
        cells = [c for row in self.table for c in row]
        return sum(c == BLOCK_EMPTY for c in cells) / len(cells)

    def __repr__(self):
        return (
            f"BlockMask(batch={self.batch}, heads={self.heads}, q_len={self.q_len}, "
            f"kv_len={self.kv_len}, block_size={self.block_size}, "
            f"sparsity={self.sparsity:.2f})"
        )


def block_mask(
    mask_mod,
    batch,
    heads,
    q_len,
    kv_len,
    *,
    block_size=DEFAULT_BLOCK_SIZE,
    alignment="bottom_right",
):
    """Evaluates ``mask_mod`` over the (q_len, kv_len) grid once, block by block.

    Args:
        mask_mod: ``mask_mod(batch, head, q_idx, kv_idx) -> bool``, the
            convention of ``attnkit.ops.attention``.
        batch: the batch size B of the calls it serves (1 if the mask does not
            depend on the batch row: it broadcasts).
        heads: the number of query heads H (1 if the mask is the same for
            every head).
        q_len: Tq. kv_len: Tv.
        block_size: ``(query_block, key_block)``; the chunked path then uses
            these blocks (each clipped to its length). Defaults to `(256, 256)`.
        alignment: where the queries sit on the key axis, as in
            ``attention``: ``q_idx = i + Tv - Tq`` for ``"bottom_right"``, ``i``
            for ``"top_left"``. Defaults to `"bottom_right"`.

    Returns:
        A ``BlockMask``. Evaluate it outside compiled functions (it is a
        constant, read as NumPy).
    """
    from attnkit.ops import masks as masks_lib

    if not callable(mask_mod):
        raise ValueError(f"`mask_mod` must be a callable. Received: mask_mod={mask_mod!r:.200}")
    batch = _checks.positive_int(batch, "batch")
    heads = _checks.positive_int(heads, "heads")
    q_len = _checks.positive_int(q_len, "q_len")
    kv_len = _checks.positive_int(kv_len, "kv_len")
    block_size = _checks.positive_int_pair(
        block_size, "block_size", "a pair of positive integers (query_block, key_block)"
    )
    alignment = masks_lib.validate_alignment(alignment)
    offset = masks_lib.query_offset(q_len, kv_len, alignment)
    bq, bk = min(block_size[0], q_len), min(block_size[1], kv_len)
    nq, nk = math.ceil(q_len / bq), math.ceil(kv_len / bk)
    rows = []
    for i in range(nq):
        stop = min((i + 1) * bq, q_len)
        idx = modding.indices(
            batch, heads, ops.arange(i * bq, stop, dtype="int32") + offset, ops.arange(kv_len)
        )
        visible = modding.evaluate_mask_mod(mask_mod, idx, heads, 1)  # (B|1, H|1, 1, q, Tv)
        try:
            visible = np.asarray(ops.convert_to_numpy(visible), dtype=bool)
        except Exception as error:  # a tracer: each backend raises its own type
            raise ValueError(
                "`block_mask` must be built outside compiled functions (it is a constant "
                f"summary of the mask). Received: a traced mask_mod result ({error})"
            ) from error
        visible = visible.reshape(-1, stop - i * bq, visible.shape[-1])
        visible = np.broadcast_to(visible, (visible.shape[0], stop - i * bq, kv_len))
        pad = nk * bk - kv_len
        if pad:
            # Padded keys are masked by the chunked path itself: they count as
            # visible here so that they neither empty nor fragment a block.
            visible = np.concatenate([visible, np.ones(visible.shape[:2] + (pad,), bool)], -1)
        blocks = visible.reshape(visible.shape[0], visible.shape[1], nk, bk)
        any_visible = blocks.any(axis=(0, 1, 3))
        all_visible = blocks.all(axis=(0, 1, 3))
        rows.append(
            tuple(
                BLOCK_FULL if full else (BLOCK_PARTIAL if some else BLOCK_EMPTY)
                for some, full in zip(any_visible, all_visible, strict=True)
            )
        )
    return BlockMask(
        mask_mod=mask_mod,
        batch=batch,
        heads=heads,
        q_len=q_len,
        kv_len=kv_len,
        block_size=(bq, bk),
        table=tuple(rows),
        offset=offset,
    )


def check_fits(block_mask, batch, heads, q_len, kv_len):
    """ValueError unless ``block_mask`` was built for these sizes."""
    if not isinstance(block_mask, BlockMask):
        raise ValueError(
            "`block_mask` must be an attnkit.ops.block_mask(...) result or None. "
            f"Received: block_mask={block_mask!r:.200}"
        )
    for name, built, got in (
        ("batch", block_mask.batch, batch),
        ("heads", block_mask.heads, heads),
        ("q_len", block_mask.q_len, q_len),
        ("kv_len", block_mask.kv_len, kv_len),
    ):
        if built == 1 and name in ("batch", "heads"):
            continue  # broadcasts
        if got is not None and built != got:
            raise ValueError(
                f"`block_mask` was built for {name}={built} but the inputs have "
                f"{name}={got}. Received: block_mask={block_mask!r}"
            )
