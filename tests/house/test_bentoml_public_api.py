"""BentoML through its public API only: no module of the repository (product code, tests, benchmarks, tools) imports
or names BentoML's private modules (``bentoml._internal``, ``bentoml_cli._internal``, ``_bentoml_impl``,
``_bentoml_sdk``), which change without notice between releases.

Read from every module's syntax tree: ``import`` statements at any depth, attribute access on ``bentoml``, and every
string but docstrings (a module path handed to ``importlib`` or ``mock.patch``).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.code_scan import docstrings
from tests.support.paths import REPO

pytestmark = pytest.mark.unit

# A private module of BentoML's distributions: an underscore name under bentoml or bentoml_cli (dunders such as
# __version__ are public), or one of the underscore packages the bentoml distribution ships.
PRIVATE = re.compile(r"(?<![\w.])(?:bentoml(?:_cli)?\._(?!_)\w*|_bentoml_\w+)")
SKIPPED_FOLDERS = {"node_modules", "__pycache__"}  # and every hidden folder: .venv, .git, .pzone, caches
THIS_MODULE = Path(__file__).resolve()


def python_modules() -> Iterator[Path]:
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in SKIPPED_FOLDERS]
        for name in files:
            path = Path(folder) / name
            if name.endswith(".py") and path.resolve() != THIS_MODULE:
                yield path


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for each use of a private BentoML module in this module's code."""
    tree = ast.parse(source)
    skip = docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            names = [f"{node.value.id}.{node.attr}"]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            names = [node.value]
        found += [(getattr(node, "lineno", 0), m.group(0)) for name in names for m in PRIVATE.finditer(name)]
    return sorted(set(found))


def test_no_module_uses_bentomls_private_modules() -> None:
    uses = {
        f"{path.relative_to(REPO).as_posix()}:{line}": what
        for path in python_modules()
        for line, what in private_uses(path.read_text(encoding="utf-8"))
    }
    assert uses == {}, (
        f"use BentoML's public API (bentoml.models, bentoml.bentos, bentoml.exceptions ...): {uses}"
    )


def test_the_scan_covers_the_whole_repository() -> None:
    scanned = {path.relative_to(REPO).as_posix() for path in python_modules()}
    for expected in (
        "service.py",
        "training/src/pzone_training/bento.py",
        "tests/support/tiny_model.py",
        "tests/model/test_model_tier.py",
        "benchmarks/serving.py",
    ):
        assert expected in scanned
    assert not any(p.startswith((".venv/", ".git/")) for p in scanned)


@pytest.mark.parametrize(
    ("code", "hits"),
    [
        ("from bentoml._internal.tag import Tag", 1),
        ("import bentoml._internal.configuration.containers as c", 1),
        ("from bentoml import _internal", 1),
        ("def f():\n    from _bentoml_sdk import Service", 1),
        ("import _bentoml_impl.server", 1),
        ("from bentoml_cli._internal import x", 1),
        ("import bentoml\nstore = bentoml._internal.models", 1),
        ('importlib.import_module("bentoml._internal.models")', 1),
        ('mock.patch("bentoml._internal.store.Store.get")', 1),
        ('"""Not bentoml._internal: a docstring may say why."""', 0),
        ("import bentoml\nfrom bentoml.exceptions import NotFound\nbentoml.models.get('x')", 0),
        ("from bentoml import __version__\nv = bentoml.__version__", 0),
        ('name = "my_bentoml._internal"', 0),
    ],
)
def test_the_scan_finds_what_it_looks_for(code: str, hits: int) -> None:
    assert len(private_uses(code)) == hits
