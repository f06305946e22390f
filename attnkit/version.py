"""attnkit's version: the installed distribution's metadata, one source (pyproject.toml).

An installed attnkit (a wheel, or ``pip install -e .``) reads its version from
its metadata. A source tree imported without an install (``PYTHONPATH=.``)
reads it from the ``pyproject.toml`` beside the package; anything else says
``0+unknown`` rather than guess.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path


def _source_tree_version() -> str | None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    # The [project] table's name and version, first in the file (no TOML parser on 3.10).
    if not re.search(r'^name\s*=\s*"attnkit"\s*$', text, re.MULTILINE):
        return None
    found = re.search(r'^version\s*=\s*"([^"]+)"\s*$', text, re.MULTILINE)
    return found.group(1) if found else None


def _version() -> str:
    try:
        return metadata.version("attnkit")
    except metadata.PackageNotFoundError:
        return _source_tree_version() or "0+unknown"


__version__: str = _version()
