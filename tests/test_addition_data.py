"""attnkit.data.addition: Raffel & Ellis 2015's addition and multiplication data."""

import numpy as np
import pytest

from attnkit.data import addition
from attnkit.models.addition_model import build_addition_model


@pytest.mark.parametrize("task", addition.TASKS)
@pytest.mark.parametrize("min_length", [11, 50, 1000])
def test_sequences_follow_the_paper(task, min_length):
    x, y = addition.generate(300, min_length, task=task, seed=0)
    width = int(np.ceil(1.1 * min_length))
    assert x.shape == (300, width, 2) and y.shape == (300, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    values, markers = x[..., 0].astype(np.float64), x[..., 1]
    lengths = (values != 0).sum(-1)
    assert lengths.min() >= min_length and lengths.max() <= width
    for row in range(300):
        n = lengths[row]
        np.testing.assert_array_equal(values[row, n:], 0.0)
        np.testing.assert_array_equal(markers[row, n:], 0.0)
        assert markers[row, 0] == -1 and markers[row, n - 1] == -1
        first, second = np.flatnonzero(markers[row] == 1)
        assert markers[row, 1 : n - 1][markers[row, 1 : n - 1] != 1].tolist() == [0] * (n - 4)
        # N1 in [1, 9], N2 in [1, T/2 - 2] (moved on by one when equal to N1).
        assert any(
            1 <= a <= 9 and 1 <= b <= n // 2 - 1 for a, b in ((first, second), (second, first))
        )
        x1, x2 = values[row, first], values[row, second]
        want = 0.5 + (x1 + x2) / 4 if task == "addition" else x1 * x2
        assert abs(y[row, 0] - want) < 1e-6
    low = -1.0 if task == "addition" else 0.0
    assert values.min() >= low and values.max() <= 1.0
    if task == "addition":
        assert values.min() < -0.9  # U[-1, 1], not U[0, 1]


def test_seeded_and_lengths_cover_the_range():
    a, b = addition.generate(500, 20, seed=3), addition.generate(500, 20, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], addition.generate(500, 20, seed=4)[0])
    lengths = (a[0][..., 0] != 0).sum(-1)
    assert set(lengths.tolist()) == {20, 21, 22}  # [T0, ceil(1.1 T0)], both ends


def test_model_has_the_papers_parameter_count():
    model = build_addition_model()
    assert model.count_params() == 10_602
    x, _ = addition.generate(2, 12, seed=0)
    assert model.predict(x, verbose=0).shape == (2, 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n": 0, "min_length": 10}, "Received: n=0"),
        ({"n": 2, "min_length": 10}, "Received: min_length=10"),
        ({"n": 2, "min_length": 12, "task": "xor"}, "Received: task='xor'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        addition.generate(**kwargs)


def test_model_uses_the_papers_training_setup():
    # craffel/ff-attention: Adam (0.9, 0.999, 1e-8) at 0.01, the best of the
    # paper's grid for the addition problem; LReLU (slope 0.01) on every layer.
    model = build_addition_model(seed=0)
    optimizer = model.optimizer
    assert float(optimizer.learning_rate) == pytest.approx(1e-2)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.999, 1e-8)
    assert model.loss == "mse"
    assert model.get_layer("output_lrelu").negative_slope == pytest.approx(0.01)
    assert np.all(model.get_layer("embed").get_weights()[1] == 0.0)
