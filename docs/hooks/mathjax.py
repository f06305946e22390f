"""MkDocs hook: serves MathJax from the installed package, so equations need no CDN.

The pages write equations as ``$...$`` / ``$$...$$`` (pymdownx.arithmatex, generic
mode), and ``docs/javascripts/mathjax-config.js`` configures MathJax to typeset them.
MathJax itself (3.2.2, the single-file ``tex-svg.js``: SVG output with its fonts
inside, nothing else to fetch) comes from the ``django-static-mathjax`` package of the
``docs`` extra, which ships MathJax's files and imports nothing (Django is not
needed). ``on_files`` adds that file to the site as ``assets/mathjax/tex-svg.js``, the
path ``mkdocs.yml`` lists under ``extra_javascript``: it is copied into ``site/``, never
into ``docs/``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

SITE_PATH = "assets/mathjax/tex-svg.js"


def mathjax_script() -> Path:
    """The installed ``tex-svg.js``; a PluginError naming the extra when it is missing."""
    spec = importlib.util.find_spec("mathjax")
    if spec is not None and spec.origin is not None:
        script = Path(spec.origin).parent / "static" / "mathjax" / "es5" / "tex-svg.js"
        if script.is_file():
            return script
    raise PluginError(
        "The docs render equations with a local MathJax, from the django-static-mathjax "
        "package: pip install -e '.[docs]'"
    )


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, SITE_PATH, abs_src_path=str(mathjax_script())))
    return files
