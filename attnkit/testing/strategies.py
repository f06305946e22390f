"""Hypothesis strategies for attnkit's property tests (a test extra: needs ``hypothesis``).

Shape legend: B batch, Tq query length, Tv key/value length, D feature size.

Two regimes, chosen by the hypothesis profile (``HYPOTHESIS_PROFILE``, see
tests/conftest.py): the default profile of ``make test`` draws shapes from a
small fixed set, because JAX compiles every op again for every new shape (a
new shape costs about a second, a seen one milliseconds); the ``fuzz``
profile of ``make fuzz`` draws them freely.

Input magnitudes run from exact zeros and 1e-6 up to ``MAGNITUDE_BOUNDS``,
the largest magnitude each compute dtype represents comfortably:

- float16 (``mixed_float16``): 2**10 = 1024. float16 ends at 65504, so a
  linear map of the inputs (a projection summing D <= 16 products with
  unit-scale kernel entries: at most 16 * 1024 = 16384) stays representable
  with 4x headroom, and so does every convex combination of the values.
  Quadratic quantities (logits ``q . k``, squared norms) are not: at this
  bound they reach 1e6-1e8, and a layer must form them in float32 (issue 16
  item 1) for the promise "representable inputs give a finite output".
- float32 and bfloat16 (``mixed_bfloat16``; bfloat16 has float32's exponent
  range): 2**40 (about 1.1e12). A quadratic quantity of projected inputs is
  then at most (16 * 2**40)**2 * 16 (about 5e30) and a gradient of one
  (cotangent x value x key, times the projections) stays near 1e32, both six
  decades below float32's 3.4e38; beyond it squared norms of a few entries
  overflow float32 itself.

Strategies draw small specifications (``InputSpec``: magnitude, zero vectors,
mask kind) plus a NumPy seed; ``make_tensor`` and ``make_mask`` turn them into
plain NumPy data (float32 arrays, boolean masks with True = may attend), so
the same example runs on every backend and a failure prints as a few numbers.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from hypothesis import strategies as st

#: The three dtype policies every layer property runs under.
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")

#: Largest input magnitude per dtype policy (see the module docstring).
MAGNITUDE_BOUNDS = {"float32": 2.0**40, "mixed_bfloat16": 2.0**40, "mixed_float16": 2.0**10}

#: Unit roundoff of each policy's compute dtype.
EPS = {"float32": 2.0**-24, "mixed_bfloat16": 2.0**-8, "mixed_float16": 2.0**-11}

#: (B, Tq, Tv) of the default profile: a batch of two with Tq < Tv, and a
#: single query (a decoding step) over a batch of one.
FIXED_LENGTHS = ((2, 3, 5), (1, 1, 4))

MASK_KINDS = ("none", "padding", "holes", "empty_batch")


def fuzzing() -> bool:
    """Whether the ``fuzz`` hypothesis profile is loaded (``make fuzz``)."""
    return os.environ.get("HYPOTHESIS_PROFILE", "default") == "fuzz"


def lengths():
    """``(B, Tq, Tv)``: from ``FIXED_LENGTHS`` by default, free when fuzzing."""
    if not fuzzing():
        return st.sampled_from(FIXED_LENGTHS)
    return st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 9))


def magnitudes(policy):
    """Input magnitudes for ``policy``: 0, 1e-6, ordinary ones and the dtype's bound.

    When fuzzing, also log-uniform magnitudes between 1e-6 and the bound.
    """
    bound = MAGNITUDE_BOUNDS[policy]
    fixed = st.sampled_from((0.0, 1e-6, 1e-3, 1.0, 1.0, 4.0, 32.0, bound))
    if not fuzzing():
        return fixed
    log_uniform = st.floats(np.log10(1e-6), np.log10(bound)).map(lambda e: float(10.0**e))
    return st.one_of(fixed, log_uniform)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How one input is made: ``magnitude * normal`` entries, optionally with
    zero vectors (about 30% of the time steps), and a mask kind (one of
    ``MASK_KINDS``). A few numbers, so a failing example prints as a short,
    exact reproduction."""

    magnitude: float
    zero_vectors: bool
    mask: str


@st.composite
def input_specs(draw, policy, masks=MASK_KINDS):
    return InputSpec(draw(magnitudes(policy)), draw(st.booleans()), draw(st.sampled_from(masks)))


def make_tensor(spec, shape, rng):
    """The float32 array of ``shape`` (..., T, D) that ``spec`` describes."""
    x = rng.normal(size=shape) * spec.magnitude
    if spec.zero_vectors:
        x[rng.random(shape[:-1]) < 0.3] = 0.0  # (..., T)
    return x.astype("float32")


def make_mask(kind, batch, length, rng):
    """A boolean (B, T) mask of ``kind``, or None for ``"none"``.

    ``"padding"``: random lengths, 0 (a fully masked row) included;
    ``"holes"``: random positions masked, and one batch row fully masked;
    ``"empty_batch"``: batch row 0 fully masked, the others visible.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"`kind` must be one of {MASK_KINDS}. Received: kind={kind!r}")
    if kind == "none":
        return None
    if kind == "padding":
        valid = rng.integers(0, length + 1, size=batch)
        return np.arange(length)[None, :] < valid[:, None]
    if kind == "holes":
        mask = rng.random((batch, length)) < 0.7
        mask[rng.integers(0, batch)] = False
        return mask
    mask = np.ones((batch, length), bool)
    mask[0] = False
    return mask


def seeds():
    """A NumPy seed: the entries of the drawn arrays come from it."""
    return st.integers(0, 2**31 - 1)
