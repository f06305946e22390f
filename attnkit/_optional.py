"""attnkit's optional dependencies: which extra installs each, and the error when one is missing.

``pip install attnkit`` brings Keras, NumPy and the default backend only. The
plots and interactive views (``attnkit.viz``) need matplotlib, the digits demo
needs scikit-learn; each is checked where it is first needed, never on
``import attnkit``, and a missing one raises :class:`MissingDependencyError`
(an ``ImportError``) whose one-line message names the pip install that fixes
it. The command line prints that line and exits with status 1.
"""

from __future__ import annotations

import importlib.util

# module -> (distribution to name, attnkit extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "matplotlib": ("matplotlib", "viz"),
    "sklearn": ("scikit-learn", "demos"),
}


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says how to install it."""


def missing(module: str, feature: str) -> MissingDependencyError:
    """The error for ``feature`` (e.g. ``"attnkit.viz"``) lacking ``module``."""
    distribution, extra = EXTRAS[module]
    return MissingDependencyError(
        f"{feature} requires {distribution}: pip install 'attnkit[{extra}]'", name=module
    )


def require(module: str, feature: str) -> None:
    """Raises :class:`MissingDependencyError` when ``module`` cannot be imported.

    Only looks the module up (``importlib.util.find_spec``); nothing is imported.
    """
    if importlib.util.find_spec(module) is None:
        raise missing(module, feature)
