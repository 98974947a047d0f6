"""The library's shape: no import cycles (lazy imports inside functions count too) and no private
name imported from another module."""

from __future__ import annotations

import ast
import re
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


# --- where a module belongs --------------------------------------------------------------------------
# The rule: the top of the package is the ground every stage stands on (GROUND); every other module
# lives in the subpackage of its concern. Layers import downwards or sideways, never upwards: the ground
# knows no subpackage, data and generation know no trainer, training and evaluation know no tool.
GROUND = {"cli", "config", "errors", "io", "prompts", "answers", "hub", "models", "devices"}
LAYERS = {"ground": 0, "data": 1, "generation": 1, "training": 2, "evaluation": 2, "tools": 3}
# A stage served by a library module of another name, and why.
STAGE_MODULES = {"attention_compare": "attention"}  # one module draws a model's maps and their comparison


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "ground"


def test_the_top_of_the_package_holds_only_the_ground():
    top = {p.stem for p in (ROOT / "mathpipe").glob("*.py")} - {"__init__"}
    assert top - GROUND == set(), "a module of a subpackage's concern sits at the top of mathpipe/"
    packages = {p.parent.name for p in (ROOT / "mathpipe").glob("*/__init__.py")}
    assert packages == set(LAYERS) - {"ground"}


def test_layers_import_downwards_only():
    upward = [f"{m} imports {target}" for m, edges in library_imports().items() for target, _ in edges
              if LAYERS[layer(target)] > LAYERS[layer(m)]]
    assert upward == []


def test_each_stage_has_a_library_module_of_its_name():
    library = {p.stem for p in (ROOT / "mathpipe").rglob("*.py")}
    stages = set(re.findall(r"python -m stages\.(\w+)", (ROOT / "dvc.yaml").read_text(encoding="utf-8")))
    assert len(stages) > 10
    missing = sorted(s for s in stages if STAGE_MODULES.get(s, s) not in library)
    assert missing == []


def test_the_readmes_code_map_names_files_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Code map", 1)[1].split("\n## ", 1)[0]
    paths = re.findall(r"`((?:mathpipe|stages|tests|benchmarks)/[\w/.]+)`", section)
    assert len(paths) > 20
    assert [p for p in paths if not (ROOT / p).exists()] == []
