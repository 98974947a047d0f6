"""The library's shape: no import cycles (lazy imports inside functions count too) and no private
name imported from another module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_imports() -> dict[str, list[tuple[str, list[str]]]]:
    """module -> (imported mathpipe module, names taken from it), for every import anywhere in it."""
    modules = {module_name(p): p for p in (ROOT / "mathpipe").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mathpipe"):
                names = [a.name for a in node.names]
                if node.module in modules:
                    edges.append((node.module, names))
                # `from mathpipe import answers` imports the submodule answers
                edges += [(f"{node.module}.{n}", []) for n in names if f"{node.module}.{n}" in modules]
            elif isinstance(node, ast.Import):
                edges += [(a.name, []) for a in node.names if a.name in modules]
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None


def test_the_library_has_no_import_cycle():
    graph = {m: sorted({target for target, _ in edges if target != m and not m.startswith(target + ".")})
             for m, edges in library_imports().items()}
    assert find_cycle(graph) is None


def test_no_private_name_is_imported_from_another_module():
    private = [f"{m} imports {n} from {target}" for m, edges in library_imports().items()
               for target, names in edges for n in names if n.startswith("_") and not n.startswith("__")]
    assert private == []
