"""The package's shape: a lean core, extras named when missing, the version, py.typed.

The missing extras are simulated in a subprocess by setting their ``sys.modules``
entries to None (so ``import matplotlib`` fails as if it were not installed)
before attnkit is imported. ``make package-check`` checks the real thing: the
wheel in a fresh virtual environment without them.
"""

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# The same on every backend: `make test` runs it in one backend's suite (conftest.py).
pytestmark = pytest.mark.backend_independent

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (3.10 has no TOML parser)

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

VIZ_LINE = "attnkit.viz requires matplotlib: pip install 'attnkit[viz]'"
DEMOS_LINE = "attnkit demo digits requires scikit-learn: pip install 'attnkit[demos]'"

_BLOCK = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now raises ImportError, as if not installed
"""


def _python(code, blocked=("matplotlib", "sklearn"), cwd=None):
    script = _BLOCK.format(blocked=tuple(blocked)) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=600,
    )


def test_the_library_imports_without_the_extras_and_viz_names_its_install():
    done = _python(
        f"""
        import attnkit, attnkit.layers, attnkit.ops, attnkit.maps, attnkit.explain
        from attnkit._optional import MissingDependencyError

        try:
            import attnkit.viz
        except MissingDependencyError as error:
            assert isinstance(error, ImportError) and error.name == "matplotlib"
            assert str(error) == {VIZ_LINE!r}, str(error)
        else:
            raise AssertionError("attnkit.viz imported without matplotlib")
        try:  # a submodule goes through the package's check too
            from attnkit.viz.heatmap import plot_attention
        except MissingDependencyError as error:
            assert str(error) == {VIZ_LINE!r}, str(error)
        else:
            raise AssertionError("attnkit.viz.heatmap imported without matplotlib")
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["demo", "digits", "--epochs", "1"], DEMOS_LINE),
        (["demo", "dates", "--epochs", "1"], VIZ_LINE),
        (
            ["show", "model.keras", "3 may 1979"],
            "attnkit show requires matplotlib: pip install 'attnkit[viz]'",
        ),
        (
            ["bench", "--plot"],
            "attnkit bench --plot requires matplotlib: pip install 'attnkit[viz]'",
        ),
    ],
    ids=["digits", "dates", "show", "bench-plot"],
)
def test_the_cli_prints_the_install_line_and_exits_1_without_a_traceback(argv, line, tmp_path):
    done = _python(
        f"""
        sys.argv = ["attnkit", *{argv!r}, *(["--out", "out"] if {argv[0]!r} == "demo" else [])]
        from attnkit.cli.main import main

        sys.exit(main())
        """,
        cwd=tmp_path,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert f"attnkit: {line}" in done.stderr.splitlines(), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_the_digits_demo_names_scikit_learn_even_with_matplotlib_installed(tmp_path):
    done = _python(
        """
        from attnkit.cli.main import main

        sys.exit(main(["demo", "digits", "--epochs", "1", "--out", "out"]))
        """,
        blocked=("sklearn",),
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert f"attnkit: {DEMOS_LINE}" in done.stderr.splitlines(), done.stderr


def test_the_core_dependencies_are_keras_numpy_and_the_default_backend():
    names = sorted(
        d.split("[")[0].split(">")[0].split("=")[0].strip() for d in PYPROJECT["dependencies"]
    )
    assert names == ["jax", "keras", "numpy"]
    extras = PYPROJECT["optional-dependencies"]
    assert extras["viz"] == ["matplotlib>=3.8"]
    assert "scikit-learn>=1.4" in extras["demos"] and "attnkit[viz]" in extras["demos"]
    assert "attnkit[viz,demos,docs]" in extras["test"]  # the tests build the docs too
    assert any(r.startswith("mkdocs-material>=") for r in extras["docs"])
    assert extras["torch"] == ["torch==2.13.0"]
    assert all("[" in r or ">=" in r or "==" in r for e in extras.values() for r in e)


def test_every_missing_module_maps_to_an_extra_that_installs_it():
    from attnkit import _optional

    extras = PYPROJECT["optional-dependencies"]
    for module, (distribution, extra) in _optional.EXTRAS.items():
        assert any(r.startswith(distribution) for r in extras[extra]), (module, extra)


def test_the_version_is_the_package_metadata_and_the_source_tree_fallback_agrees(monkeypatch):
    import attnkit
    from attnkit import version

    assert attnkit.__version__ == importlib.metadata.version("attnkit") == PYPROJECT["version"]
    assert version._source_tree_version() == PYPROJECT["version"]

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version.metadata, "version", not_installed)
    assert version._version() == PYPROJECT["version"]
    monkeypatch.setattr(version, "_source_tree_version", lambda: None)
    assert version._version() == "0+unknown"


def test_py_typed_ships_with_the_package():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    assert "py.typed" in tool["setuptools"]["package-data"]["attnkit"]
    assert (ROOT / "attnkit" / "py.typed").is_file()
