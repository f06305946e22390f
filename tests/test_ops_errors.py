"""Every bad argument of the attention core gets a ValueError naming it."""

import numpy as np
import pytest

from attnkit.ops import attention, attention_weights


def t(*shape):
    return np.zeros(shape, dtype="float32")


Q3, K3 = t(2, 5, 8), t(2, 7, 8)
Q4, K4 = t(2, 5, 4, 8), t(2, 7, 2, 8)

CASES = [
    (
        "rank",
        lambda: attention(t(2, 8), t(2, 8), t(2, 8)),
        r"query.*Received: query.shape=\(2, 8\)",
    ),
    ("rank-mismatch", lambda: attention(Q4, K3, K3), r"key.*same rank.*key.shape=\(2, 7, 8\)"),
    (
        "batch",
        lambda: attention(Q3, t(3, 7, 8), t(3, 7, 8)),
        r"Batch sizes.*query.shape\[0\]=2 and key.shape\[0\]=3",
    ),
    (
        "kv-length",
        lambda: attention(Q3, K3, t(2, 6, 8)),
        r"key.shape\[1\]=7 and value.shape\[1\]=6",
    ),
    (
        "features",
        lambda: attention(Q3, t(2, 7, 4), t(2, 7, 8)),
        r"query.shape\[-1\]=8 and key.shape\[-1\]=4",
    ),
    (
        "heads",
        lambda: attention(t(2, 5, 3, 8), K4, K4),
        r"multiple.*query heads=3, key/value heads=2",
    ),
    (
        "kv-heads",
        lambda: attention(Q4, K4, t(2, 7, 1, 8)),
        r"key.shape\[2\]=2 and value.shape\[2\]=1",
    ),
    (
        "score",
        lambda: attention(Q3, K3, K3, score="bilinear"),
        r"score.*Received: score='bilinear'",
    ),
    (
        "implementation",
        lambda: attention(Q3, K3, K3, implementation="flash"),
        r"Received: implementation='flash'",
    ),
    ("causal", lambda: attention(Q3, K3, K3, causal="yes"), r"Received: causal='yes'"),
    ("causal_int", lambda: attention(Q3, K3, K3, causal=3), r"must be a bool\. Received: causal=3"),
    (
        "alignment",
        lambda: attention(Q3, K3, K3, causal=True, alignment="left"),
        r"`alignment` must be one of \('bottom_right', 'top_left'\)\. Received: alignment='left'",
    ),
    ("window-negative", lambda: attention(Q3, K3, K3, window=-2), r"Received: window=-2"),
    ("window-float", lambda: attention(Q3, K3, K3, window=2.5), r"Received: window=2.5"),
    ("dropout-high", lambda: attention(Q3, K3, K3, dropout=1.0), r"Received: dropout=1.0"),
    ("dropout-negative", lambda: attention(Q3, K3, K3, dropout=-0.1), r"Received: dropout=-0.1"),
    ("scale", lambda: attention(Q3, K3, K3, scale=float("nan")), r"Received: scale=nan"),
    (
        "mask-rank",
        lambda: attention(Q3, K3, K3, mask=np.ones((2, 1, 5, 7), bool)),
        r"mask.*Received: mask.shape=\(2, 1, 5, 7\)",
    ),
    (
        "mask-shape",
        lambda: attention(Q3, K3, K3, mask=np.ones((2, 5, 6), bool)),
        r"mask.*Tv axis has size 6",
    ),
    (
        "mask-heads",
        lambda: attention(Q4, K4, K4, mask=np.ones((2, 3, 5, 7), bool)),
        r"mask.*3 heads.*query has 4",
    ),
    (
        "bias-shape",
        lambda: attention(Q3, K3, K3, bias=np.ones((3, 5, 7), "float32")),
        r"bias.*B axis has size 3",
    ),
    (
        "block-size",
        lambda: attention(Q3, K3, K3, implementation="chunked", block_size=(0, 4)),
        r"Received: block_size=\(0, 4\)",
    ),
    (
        "chunked-weights",
        lambda: attention(Q3, K3, K3, implementation="chunked", return_weights=True),
        r"implementation='chunked' cannot serve.*weights",
    ),
    (
        "fused-score",
        lambda: attention(Q3, K3, K3, implementation="fused", score="cosine"),
        r"implementation='fused' cannot serve.*score=cosine",
    ),
    (
        "fused-dropout",
        lambda: attention(Q3, K3, K3, implementation="fused", dropout=0.1, training=True),
        r"fused.*dropout",
    ),
    ("weights-window", lambda: attention_weights(Q3, K3, window=0), r"Received: window=0"),
]


@pytest.mark.parametrize("name,call,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments_raise_value_error(name, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# score_mod / mask_mod / sinks / block_mask (issue 17) ------------------------


def _wrong_shape(score, b, h, q, kv):
    return score[..., :1]


def _wrong_dtype(score, b, h, q, kv):
    return q - kv  # int32


def _not_boolean(b, h, q, kv):
    return q - kv


def _causal(b, h, q, kv):
    return q >= kv


def _block_mask(**kwargs):
    from attnkit.ops import block_mask

    sizes = dict(batch=1, heads=1, q_len=5, kv_len=7)
    sizes.update(kwargs)
    return block_mask(_causal, **sizes, block_size=(4, 4))


MOD_CASES = [
    (
        "score_mod-shape",
        lambda impl: attention(Q4, K4, K4, score_mod=_wrong_shape, implementation=impl),
        r"`score_mod` must return scores of the shape.*Received: score_mod returned shape",
    ),
    (
        "score_mod-dtype",
        lambda impl: attention(Q4, K4, K4, score_mod=_wrong_dtype, implementation=impl),
        r"`score_mod` must return a floating-point.*Received: score_mod returned dtype int32",
    ),
    (
        "mask_mod-dtype",
        lambda impl: attention(Q4, K4, K4, mask_mod=_not_boolean, implementation=impl),
        r"`mask_mod` must return a boolean.*Received: mask_mod returned dtype int32",
    ),
    (
        "score_mod-callable",
        lambda impl: attention(Q4, K4, K4, score_mod=3, implementation=impl),
        r"`score_mod` must be a callable or None. Received: score_mod=3",
    ),
    (
        "params-without-mod",
        lambda impl: attention(Q4, K4, K4, score_mod_params=(t(4),), implementation=impl),
        r"`score_mod_params`.*Received: score_mod=None",
    ),
    (
        "sinks-shape",
        lambda impl: attention(Q4, K4, K4, sinks=t(2), implementation=impl),
        r"`sinks` must have shape \(H,\) = \(4,\).*Received: sinks.shape=\(2,\)",
    ),
    (
        "block_mask-length",
        lambda impl: attention(Q4, K4, K4, block_mask=_block_mask(kv_len=9), implementation=impl),
        r"`block_mask` was built for kv_len=9 but the inputs have kv_len=7",
    ),
    (
        "block_mask-batch",
        lambda impl: attention(Q4, K4, K4, block_mask=_block_mask(batch=3), implementation=impl),
        r"`block_mask` was built for batch=3 but the inputs have batch=2",
    ),
    (
        "block_mask-type",
        lambda impl: attention(Q4, K4, K4, block_mask="causal", implementation=impl),
        r"`block_mask` must be an attnkit.ops.block_mask\(\.\.\.\) result.*block_mask='causal'",
    ),
    (
        "block_mask-alignment",
        lambda impl: attention(
            Q4, K4, K4, block_mask=_block_mask(), alignment="top_left", implementation=impl
        ),
        r"`block_mask` was built for another alignment",
    ),
    (
        "block_mask-block_size",
        lambda impl: attention(
            Q4, K4, K4, block_mask=_block_mask(), block_size=(2, 2), implementation=impl
        ),
        r"`block_size` must equal the block mask's block size \(4, 4\).*block_size=\(2, 2\)",
    ),
    (
        "fused-with-mods",
        lambda impl: attention(Q4, K4, K4, mask_mod=_causal, implementation="fused"),
        r"implementation='fused' cannot serve this call: it has no .*mask_mod",
    ),
]
CHUNKED_ONLY = {"block_mask-alignment", "block_mask-block_size"}


@pytest.mark.parametrize("impl", ("naive", "chunked"))
@pytest.mark.parametrize("name,call,pattern", MOD_CASES, ids=[c[0] for c in MOD_CASES])
def test_bad_mods_raise_value_error(name, call, pattern, impl):
    if impl == "naive" and name in CHUNKED_ONLY:
        pytest.skip("checked where the chunked path uses the block mask")
    with pytest.raises(ValueError, match=pattern):
        call(impl)


def test_block_mask_arguments():
    from attnkit.ops import block_mask

    with pytest.raises(ValueError, match=r"`mask_mod` must be a callable. Received: mask_mod=1"):
        block_mask(1, 1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"`q_len` must be a positive integer. Received: q_len=0"):
        block_mask(_causal, 1, 1, 0, 4)
    with pytest.raises(ValueError, match=r"`block_size` must be a pair.*block_size=\(4,\)"):
        block_mask(_causal, 1, 1, 4, 4, block_size=(4,))
    with pytest.raises(ValueError, match=r"`mask_mod` must return a boolean"):
        block_mask(_not_boolean, 1, 1, 4, 4)
