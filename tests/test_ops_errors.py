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
        "chunked-dropout",
        lambda: attention(Q3, K3, K3, implementation="chunked", dropout=0.1, training=True),
        r"chunked.*dropout",
    ),
    ("weights-window", lambda: attention_weights(Q3, K3, window=0), r"Received: window=0"),
]


@pytest.mark.parametrize("name,call,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments_raise_value_error(name, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
