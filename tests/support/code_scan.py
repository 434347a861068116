"""Reading the workspace's own code as syntax trees, for the house tests that look for a contract's second spelling
and the tests that read a module's constants without importing it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

# Where a contract could be copied: the packages' sources, the tests' shared helpers and the benchmarks. Test
# modules themselves may spell expected values out: that is what a test is for.
SOURCE_ROOTS = [
    *sorted(p for p in REPO.glob("**/src") if ".venv" not in p.parts and "node_modules" not in p.parts),
    REPO / "tests" / "support",
    REPO / "benchmarks",
]


def modules() -> Iterator[tuple[str, ast.Module]]:
    """Every Python module under :data:`SOURCE_ROOTS`, as (path from the repository root, syntax tree)."""
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring nodes of a syntax tree (module, classes, functions): prose that may name anything."""
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    }


def where(path: str, node: ast.AST) -> str:
    return f"{path}:{getattr(node, 'lineno', '?')}"


def module_constant(path: Path, name: str) -> Any:
    """The literal value a module assigns to ``name`` at its top level, read without importing the module."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"{path} assigns no {name} at its top level")
