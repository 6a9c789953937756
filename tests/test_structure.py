"""The package's shape: no import cycle anywhere in jaxcnn, function-level imports included, across both
of its source folders: jaxcnn/ and verification/ (installed as jaxcnn.verification, which run.py and
report.py import)."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"jaxcnn": REPO / "jaxcnn", "jaxcnn.verification": REPO / "verification"}   # pyproject's package-dir


def _modules(roots=ROOTS) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package's __init__.py by the package's name)."""
    found = {}
    for prefix, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


def _imports(name: str, path: Path, modules) -> set[str]:
    """The package's modules that module `name` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            source = ".".join(p for p in (base, node.module) if p)
            for alias in node.names:                      # `from x import m` may name a module m of package x
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m in modules}


def _graph(roots=ROOTS):
    modules = _modules(roots)
    return {name: _imports(name, path, modules) - {name} for name, path in modules.items()
            if not name.endswith("__main__")}


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_scan_resolves_relative_absolute_and_function_level_imports(tmp_path):
    """A two-folder package like jaxcnn's, with a cycle only through the second folder, inside a function."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "extra").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from .a import f\n")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from .extra import b\n")
    (tmp_path / "pkg" / "report.py").write_text("import json\n")
    (tmp_path / "extra" / "__init__.py").write_text("")
    (tmp_path / "extra" / "b.py").write_text("from pkg.extra import report\nfrom pkg import f\n")
    (tmp_path / "extra" / "report.py").write_text("from . import b\nfrom pkg.a import f\n")
    graph = _graph({"pkg": tmp_path / "pkg", "pkg.extra": tmp_path / "extra"})
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.extra.b"}, "pkg.report": set(), "pkg.extra": set(),
                     "pkg.extra.b": {"pkg.extra.report", "pkg"}, "pkg.extra.report": {"pkg.extra.b", "pkg.a"}}
    assert _cycle(graph) == ["pkg", "pkg.a", "pkg.extra.b", "pkg"]


def test_no_import_cycle_in_the_package():
    graph = _graph()
    assert {"jaxcnn.model", "jaxcnn.fast", "jaxcnn.numerics", "jaxcnn.cli", "jaxcnn.verification.checks",
            "jaxcnn.verification.backprop", "jaxcnn.verification.report"} <= graph.keys()
    assert "jaxcnn.verification.checks" in graph["jaxcnn.report.analysis"]   # the folder jaxcnn's own modules reach into
    assert "jaxcnn.cli" not in set().union(*graph.values())      # nothing imports the CLI
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_reference_model_imports_nothing_of_the_fast_path():
    graph = _graph()
    assert "jaxcnn.fast" not in graph["jaxcnn.model"] and "jaxcnn.model" not in graph["jaxcnn.fast"]


def test_the_written_out_delta_rule_imports_nothing_of_jaxcnn():
    """verification/backprop.py is the independent reference (numpy and scipy, beside cnnbp.m): it may not
    lean on the code it checks."""
    assert _graph()["jaxcnn.verification.backprop"] == set()
