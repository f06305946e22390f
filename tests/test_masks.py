import numpy as np
import pytest
from conftest import to_numpy

from attnkit.ops import causal_mask, combine_masks, padding_mask, sliding_window_mask
from attnkit.testing.reference import reference_mask


@pytest.mark.parametrize("tq,tv", [(5, 5), (3, 7), (7, 3), (1, 6)])
@pytest.mark.parametrize("alignment", ["bottom_right", "top_left"])
def test_causal_mask_matches_reference(tq, tv, alignment):
    got = to_numpy(causal_mask(tq, tv, alignment=alignment))
    np.testing.assert_array_equal(got, reference_mask(tq, tv, causal=alignment))


def test_causal_mask_square_is_lower_triangle():
    np.testing.assert_array_equal(to_numpy(causal_mask(4)), np.tril(np.ones((4, 4), bool)))


def test_top_left_equals_keras_use_causal_mask_convention():
    np.testing.assert_array_equal(
        to_numpy(causal_mask(3, 5, alignment="top_left")), np.tril(np.ones((3, 5), bool))
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 2, 4])
def test_sliding_window_mask(window, causal):
    got = to_numpy(sliding_window_mask(6, 6, window, causal=causal))
    i, j = np.arange(6)[:, None], np.arange(6)[None, :]
    want = np.abs(i - j) < window
    if causal:
        want &= j <= i
    np.testing.assert_array_equal(got, want)


def test_padding_mask_from_lengths_and_from_mask():
    got = to_numpy(padding_mask(np.array([2, 0, 4]), 4))
    np.testing.assert_array_equal(got, [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(to_numpy(padding_mask(got)), got)


def test_combine_masks_is_and_and_skips_none():
    a = np.array([[True, False], [True, True]])
    b = np.array([[True, True], [False, True]])
    np.testing.assert_array_equal(to_numpy(combine_masks(a, None, b)), a & b)
    assert combine_masks(None, None) is None


def test_mask_errors():
    with pytest.raises(ValueError, match=r"window.*Received: window=0"):
        sliding_window_mask(3, 3, 0)
    with pytest.raises(ValueError, match=r"causal.*Received: causal='sideways'"):
        causal_mask(3, 3, alignment="sideways")
    with pytest.raises(ValueError, match=r"max_length.*Received: max_length=None"):
        padding_mask(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"lengths_or_mask.shape=\(1, 2, 3\)"):
        padding_mask(np.zeros((1, 2, 3)))
