"""Raffel & Ellis 2015, Table 1: feed-forward attention solves the addition problem.

At T0 = 1000 the paper's model (D = 100, 10,602 parameters) gets 100% of 1000
test sequences within |error| < 0.04 after at most 3 epochs of 1000 updates of
100 fresh sequences. Slow: run with `make test-slow` (``-m slow``).
"""

import numpy as np
import pytest

from attnkit.data import addition
from attnkit.models.addition_model import build_addition_model

T0, EPOCHS, UPDATES, BATCH = 1000, 3, 1000, 100


@pytest.mark.slow
def test_addition_solved_within_three_epochs_at_t0_1000():
    import keras

    keras.utils.set_random_seed(0)
    model = build_addition_model(seed=0)
    assert model.count_params() == 10_602
    x_test, y_test = addition.generate(1000, T0, seed=12345)
    rng = np.random.default_rng(0)
    accuracies = []
    for _ in range(EPOCHS):
        for _ in range(UPDATES):
            model.train_on_batch(*addition.generate(BATCH, T0, seed=rng))
        pred = model.predict(x_test, batch_size=500, verbose=0)
        accuracies.append(float(np.mean(np.abs(pred - y_test) < addition.TOLERANCE)))
        if accuracies[-1] == 1.0:
            break
    assert accuracies[-1] == 1.0, f"test accuracy per epoch: {accuracies}"
