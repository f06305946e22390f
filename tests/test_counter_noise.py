"""Counter-based noise: a NumPy reference of the hash, statistics, the state."""

import keras
import numpy as np

from attnkit.ops import counter_noise
from attnkit.testing.reference import reference_counter_normal


def test_matches_numpy_uint32_reference():
    rng = np.random.default_rng(0)
    state = rng.integers(0, 256, size=(64, 5)).astype("float32")
    noise, _ = counter_noise.normal(keras.ops.convert_to_tensor(state), np.zeros((64, 33)))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(noise), reference_counter_normal(state, 33), atol=2e-5, rtol=0
    )


def test_is_standard_normal_and_fresh_at_every_step():
    rng = np.random.default_rng(1)
    state = keras.ops.convert_to_tensor(rng.integers(0, 256, size=(400, 5)).astype("float32"))
    like = np.zeros((400, 50), "float32")
    first, state2 = counter_noise.normal(state, like)
    second, _ = counter_noise.normal(state2, like)
    a, b = keras.ops.convert_to_numpy(first), keras.ops.convert_to_numpy(second)
    for x in (a, b):  # 20 000 draws each: 4-5 standard errors of slack
        assert abs(x.mean()) < 0.03 and abs(x.std() - 1) < 0.03
        assert abs(np.mean(np.abs(x) > 1.959964) - 0.05) < 0.008
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.03  # step t vs t + 1
    assert abs(np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1]) < 0.03  # neighbours


def test_state_counts_steps_with_carry_and_stays_exact_in_half():
    state = np.array([[7, 8, 9, 255, 3], [1, 2, 3, 0, 0]], "float32")
    _, nxt = counter_noise.normal(keras.ops.convert_to_tensor(state), np.zeros((2, 4)))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(nxt), [[7, 8, 9, 0, 4], [1, 2, 3, 1, 0]]
    )
    for dtype in ("float16", "bfloat16"):  # a cell may keep its states in half
        half = keras.ops.cast(state, dtype)
        noise, _ = counter_noise.normal(half, np.zeros((2, 4)))
        expected, _ = counter_noise.normal(keras.ops.convert_to_tensor(state), np.zeros((2, 4)))
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(noise), keras.ops.convert_to_numpy(expected)
        )


def test_initial_state_draws_seeds_from_the_generator():
    gen = keras.random.SeedGenerator(5)
    a = keras.ops.convert_to_numpy(counter_noise.initial_state(3, gen))
    b = keras.ops.convert_to_numpy(counter_noise.initial_state(3, gen))
    assert a.shape == (3, counter_noise.STATE_SIZE)
    assert np.all((a[:, :3] >= 0) & (a[:, :3] < 256)) and np.all(a[:, 3:] == 0)
    assert not np.array_equal(a, b)  # a new draw each call
    again = keras.ops.convert_to_numpy(
        counter_noise.initial_state(3, keras.random.SeedGenerator(5))
    )
    np.testing.assert_array_equal(again, a)  # same seed, same draw
