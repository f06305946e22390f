"""attnkit's module graph, its cycles and where the backend is asked about.

``python -m attnkit.testing.imports`` prints every module of the package with
the attnkit modules it imports (function-level imports included), then the
import cycles and the backend checks found outside the allowed modules (both
lists are empty in a healthy tree; ``tests/test_imports.py`` asserts it). Read
from the source with ``ast``: nothing is imported, so no backend is needed.
"""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the attnkit package
PACKAGE = ROOT.name

# Who may ask which backend runs (``keras.backend.backend()``, ``backend.name()``)
# or import a backend framework. The attention core keeps every backend branch
# in ``ops.backend``; ``ops.dispatch`` holds the policy tables. Consumers on top
# (the command line's info and benchmarks, the backend default, the test
# contract's torch-specific parameter count) report on backends, they do not
# branch the math.
BACKEND_AWARE = (
    f"{PACKAGE}.ops.backend",
    f"{PACKAGE}.ops.dispatch",
    f"{PACKAGE}._default_backend",
    f"{PACKAGE}.testing.contract",
    f"{PACKAGE}.cli",
)
FRAMEWORKS = ("jax", "torch", "tensorflow")


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules():
    """{module name: source path} of every module of the package."""
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name, known):
    """The longest known module that ``name`` (a dotted import target) names."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _parse(module, path, known):
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    imports, backend_checks = set(), []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            if target.split(".")[0] in FRAMEWORKS:
                backend_checks.append((node.lineno, f"imports {target}"))
            resolved = _resolve(target, known)
            if resolved is not None and resolved != module:
                imports.add(resolved)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            text = ast.unparse(node.func)
            if text.endswith("backend.backend") or text in ("backend.name", "backend_lib.name"):
                backend_checks.append((node.lineno, f"calls {text}()"))
    # ``from attnkit.ops import x`` also names the package: keep the most precise.
    imports = {m for m in imports if not any(o.startswith(m + ".") for o in imports)}
    return imports, backend_checks


def graph():
    """({module: set of attnkit modules it imports}, {module: [(line, what)]})."""
    known = modules()
    edges, checks = {}, {}
    for module, path in known.items():
        edges[module], found = _parse(module, path, known)
        if found:
            checks[module] = found
    return edges, checks


def cycles(edges):
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                result.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return result


def misplaced_backend_checks(checks):
    """{module: [(line, what)]} for backend checks outside ``BACKEND_AWARE``."""
    return {
        m: found
        for m, found in checks.items()
        if not any(m == allowed or m.startswith(allowed + ".") for allowed in BACKEND_AWARE)
    }


def main(argv=None):
    edges, checks = graph()
    width = max(len(m) for m in edges)
    prefix = PACKAGE + "."
    for module in sorted(edges):
        deps = ", ".join(sorted(d.removeprefix(prefix) for d in edges[module])) or "-"
        print(f"{module.removeprefix(prefix):<{width - len(prefix)}}  -> {deps}")
    found_cycles = cycles(edges)
    misplaced = misplaced_backend_checks(checks)
    print(f"\n{len(edges)} modules, {sum(len(d) for d in edges.values())} imports")
    print(f"import cycles: {found_cycles or 'none'}")
    aware = sorted(m.removeprefix(prefix) for m in checks)
    print(f"modules that ask about the backend: {', '.join(aware) or 'none'}")
    print(
        f"backend checks outside {', '.join(a.removeprefix(prefix) for a in BACKEND_AWARE)}: "
        f"{misplaced or 'none'}"
    )
    return 1 if found_cycles or misplaced else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
