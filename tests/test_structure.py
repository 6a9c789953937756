"""The package's shape: no import cycle anywhere in jaxcnn/, function-level imports included."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxcnn"


def _imports(path: Path) -> set[str]:
    """The jaxcnn modules that `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:                                   # from .x import y / from . import x, y
                found |= {node.module} if node.module else {alias.name for alias in node.names}
            elif node.module and node.module.startswith("jaxcnn."):
                found.add(node.module.split(".")[1])
            elif node.module == "jaxcnn":
                found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("jaxcnn.")}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {name.split(".")[0] for name in found} & modules


def _graph():
    return {p.stem: _imports(p) - {p.stem} for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}


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


def test_no_import_cycle_in_the_package():
    graph = _graph()
    assert {"model", "fast", "numerics", "cli"} <= graph.keys()
    assert "cli" not in set().union(*graph.values())              # nothing imports the CLI
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_reference_model_imports_nothing_of_the_fast_path():
    graph = _graph()
    assert "fast" not in graph["model"] and "model" not in graph["fast"]
