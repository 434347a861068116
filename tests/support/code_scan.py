"""Reading the workspace's own code as syntax trees, for the house tests that look for a contract's second spelling."""

from __future__ import annotations

import ast
from collections.abc import Iterator

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


def where(path: str, node: ast.AST) -> str:
    return f"{path}:{getattr(node, 'lineno', '?')}"
