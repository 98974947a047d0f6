"""dvc.yaml's code dependencies, derived from the import graph: each stage depends on its stages/
module and every project module that module imports, directly or not (lazy imports included), so a
change to one module re-runs exactly the stages whose code it is.

    python -m mathpipe.tools.code_deps           # make deps: rewrite the lists in dvc.yaml
    python -m mathpipe.tools.code_deps --check   # exit 1 and name the stages whose list is stale

Only the `stages/*.py` and `mathpipe/**.py` entries of each stage's `deps:` are this command's; the
other deps (data, models, folders), their comments and the rest of the file stay as written.
Measured against deps on whole subpackages (docs/experiments.md, "Code dependencies"): module lists
re-run fewer stages for a change to one module.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE_DEP = re.compile(r"^ +- (?:stages|mathpipe)/\S+\.py\s*$")
STAGE_MODULE = re.compile(r"python -m (stages\.\w+)")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    path = root / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(entry: Path, root: Path = ROOT) -> list[str]:
    """`entry` and the project files it imports, directly or not, as sorted paths relative to root.
    A package's __init__.py counts when its own code is imported (`from mathpipe.generation import x`)."""
    seen: set[Path] = {entry}
    todo = [entry]
    while todo:
        for node in ast.walk(ast.parse(todo.pop().read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if not name.startswith(("mathpipe", "stages")):
                    continue
                found = module_file(name, root)
                if found and found not in seen and not _empty_package(found):
                    seen.add(found)
                    todo.append(found)
    files = sorted(str(p.relative_to(root)) for p in seen)
    return [str(entry.relative_to(root))] + [f for f in files if f != str(entry.relative_to(root))]


def _empty_package(path: Path) -> bool:
    """An __init__.py with nothing but a docstring: importing through it runs no code of its own."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def render(text: str, root: Path = ROOT) -> str:
    """dvc.yaml's text with every stage's code deps replaced by the derived list."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    cmd = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if match := STAGE_MODULE.search(line):
            cmd = match.group(1)
        if line.strip() == "deps:" and cmd is not None:
            indent = " " * (len(line) - len(line.lstrip()) + 2)
            out.append(line)
            entry = module_file(cmd, root)
            out += [f"{indent}- {path}\n" for path in imported_files(entry, root)]
            i += 1
            while i < len(lines) and (lines[i].startswith(indent) or not lines[i].strip()):
                if not CODE_DEP.match(lines[i]):
                    out.append(lines[i])
                i += 1
            cmd = None
            continue
        out.append(line)
        i += 1
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = ROOT / "dvc.yaml"
    text = path.read_text(encoding="utf-8")
    derived = render(text)
    if "--check" in argv:
        if derived != text:
            print("error: dvc.yaml's code deps differ from the imports; run `make deps`", file=sys.stderr)
            return 1
        return 0
    if derived != text:
        path.write_text(derived, encoding="utf-8")
        print("dvc.yaml: code deps rewritten from the imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
