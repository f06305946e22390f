"""Argument checks shared by ops, layers, decoding and the command line.

A leaf: it imports nothing of attnkit, so every part of the package may use
it. Each check returns the (normalised) value or raises a ``ValueError`` in
the house form: what was expected, then ``Received: name=value``.
"""

from __future__ import annotations

import math


def _fail(name, expected, value):
    raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")


def positive_int(value, name, *, allow_none=False):
    """An int >= 1 (not a bool), or None when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(name, "a positive integer or None" if allow_none else "a positive integer", value)
    return value


def non_negative_int(value, name, *, allow_none=False):
    """An int >= 0 (not a bool), or None when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        expected = "a non-negative integer" + (" or None" if allow_none else "")
        _fail(name, expected, value)
    return value


def rate(value, name="dropout"):
    """A number in [0, 1), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        _fail(name, "a number in [0, 1)", value)
    return float(value)


def boolean(value, name):
    """A bool (not 0/1)."""
    if not isinstance(value, bool):
        _fail(name, "a bool", value)
    return value


def optional_bool(value, name):
    """None or a bool."""
    if value is not None and not isinstance(value, bool):
        _fail(name, "None or a bool", value)
    return value


def seed(value, name="seed"):
    """An int or None (the seed of a ``keras.random.SeedGenerator``)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        _fail(name, "an integer or None", value)
    return value


def finite_number(value, name, *, allow_none=False):
    """A finite int or float (not a bool), as a float; or None when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(name, "a finite number or None" if allow_none else "a finite number", value)
    return float(value)


def number(value, name):
    """An int or float (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(name, "a number", value)
    return float(value)


def non_negative_number(value, name):
    """An int or float >= 0 (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        _fail(name, "a number >= 0", value)
    return float(value)


def positive_number(value, name, *, allow_none=False):
    """A finite int or float > 0 (not a bool), as a float; or None when ``allow_none``."""
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        expected = "a positive finite number" + (" or None" if allow_none else "")
        _fail(name, expected, value)
    return float(value)


def one_of(value, name, choices, *, allow_none=False):
    """``value`` if it is one of ``choices`` (a tuple, shown in the message), or None
    when ``allow_none``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or value not in choices:
        _fail(name, f"one of {tuple(choices)}" + (" or None" if allow_none else ""), value)
    return value


def positive_int_pair(value, name, expected):
    """``value`` as a tuple of two positive ints; ``expected`` words the error
    ("a pair of positive integers (query_block, key_block)")."""
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in value)
    )
    if not ok:
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return tuple(value)
