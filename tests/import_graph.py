"""The project's import graph read with `ast` (no code runs): which repo files a module executes
when imported. Used by the layer test and the dvc.yaml deps test."""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mrfer"


def module_file(name: str) -> Path | None:
    """The repo file of module `name` (a package's __init__.py), or None outside the project."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module an `import` anywhere in the file names (function-level imports too), with the
    packages above it, which Python executes first."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            names |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return names


@lru_cache(maxsize=None)
def direct_imports(path: Path) -> frozenset[Path]:
    """Project files imported directly by `path`."""
    return frozenset(f for f in map(module_file, imported_names(path)) if f is not None and f != path)


def closure(path: Path) -> set[Path]:
    """`path` and every project file it imports, transitively."""
    seen, todo = {path}, [path]
    while todo:
        for f in direct_imports(todo.pop()):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return seen


def relative(paths) -> set[str]:
    return {str(p.relative_to(REPO)) for p in paths}
