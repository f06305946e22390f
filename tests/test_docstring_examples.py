"""Every ``>>>`` example in the attnkit package's docstrings runs, on the current backend.

One test per module: doctest finds the module's examples (module, class, function and
method docstrings), and runs each docstring in fresh globals that hold only the
module's ``__name__``, so an example imports what it uses and works when pasted into a
fresh interpreter. The options are ELLIPSIS and NORMALIZE_WHITESPACE; printed numbers
are rounded in the examples themselves (float32 on every backend, but not the same
last digits), never loosened here. `make test` runs this under each KERAS_BACKEND.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import attnkit

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    names = ["attnkit"]
    for info in pkgutil.walk_packages(attnkit.__path__, prefix="attnkit."):
        names.append(info.name)
    found = []
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in sorted(names):
        module = importlib.import_module(name)
        tests = finder.find(module, name, globs={})
        if any(t.examples for t in tests):
            found.append(name)
    return found


MODULES = _modules_with_examples()


def test_examples_are_found():
    """The finder sees the package's examples (a broken walk would pass every case)."""
    assert "attnkit.ops.mods" in MODULES
    assert "attnkit.layers.attention" in MODULES
    assert len(MODULES) >= 20, MODULES


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONS, verbose=False)
    # The examples' own state: a fixed seed and the default policy, as a user starts.
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    failures: list[str] = []
    attempted = 0
    for test in finder.find(module, module_name, globs={"__name__": module_name}):
        if not test.examples:
            continue
        out: list[str] = []
        result = runner.run(test, out=out.append, clear_globs=True)
        attempted += result.attempted
        if result.failed:
            failures.append("".join(out))
    assert attempted > 0
    assert not failures, f"{len(failures)} docstring(s) of {module_name} failed:\n" + "\n".join(
        failures
    )
