"""The package's structure: no import cycles, backend branches only in their leaf."""

from attnkit.testing import imports


def test_no_import_cycles():
    edges, _ = imports.graph()
    assert imports.cycles(edges) == []


def test_backend_checks_only_in_the_allowed_modules():
    _, checks = imports.graph()
    assert imports.misplaced_backend_checks(checks) == {}
    # The attention core asks in exactly two places.
    core = sorted(m for m in checks if m.startswith("attnkit.ops"))
    assert core == ["attnkit.ops.backend", "attnkit.ops.dispatch"]


def test_backend_leaf_imports_no_algorithm():
    edges, _ = imports.graph()
    assert edges["attnkit.ops.backend"] <= {"attnkit.ops.masks", "attnkit.ops.softmax"}


def test_ops_import_nothing_above_them():
    edges, _ = imports.graph()
    for module, deps in edges.items():
        if module.startswith("attnkit.ops"):
            outside = {d for d in deps if not d.startswith("attnkit.ops")} - {"attnkit._checks"}
            assert not outside, (module, outside)


def test_the_checker_finds_a_cycle_and_a_misplaced_branch():
    assert imports.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    checks = {"attnkit.layers.x": [(3, "calls keras.backend.backend()")], "attnkit.ops.backend": []}
    assert list(imports.misplaced_backend_checks(checks)) == ["attnkit.layers.x"]
