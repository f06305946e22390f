"""A griffe extension for the API pages: docstring examples shown as code.

attnkit's docstrings write their ``>>>`` examples as plain doctest paragraphs (under
an ``Example:`` line, not always indented into a Google section). Markdown would read
``>>>`` as nested quotes and ``[0.25, 0.5]`` in an output as a link, so every run of
doctest lines (``>>>`` up to the next blank line, as doctest itself delimits an
example and its output) is wrapped in a ```` ```pycon ```` fence here, on the text
mkdocstrings renders; the source files are untouched.

Docstrings filled at import time (the transformer layers' ``{transformer_args}``
markers, attnkit.layers._transformer_options.document) are taken from the imported
object, as ``help()`` shows them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if not stripped.startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(stripped)]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


def _runtime_doc(path: str) -> str | None:
    module_name, _, name = path.rpartition(".")
    try:
        obj: Any = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if doc else None


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        value = docstring.value
        if "{transformer_" in value:
            value = _runtime_doc(obj.path) or value
        if ">>>" in value:
            value = fence_doctests(value)
        docstring.value = value
