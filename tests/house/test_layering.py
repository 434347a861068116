"""Arrows point down: each workspace package imports only the packages it declares, core imports none of them.

The layers, bottom up: core (``pzone``); firmware; ingest, the API, the model tier, the data stages; training; the
local stack on top. A package's imports are read from its source (every ``import`` statement, at any depth, and
every string that names a workspace module, the way ``importlib.import_module`` would be handed one), and core's
isolation is also proven by importing every core module in a fresh interpreter where only core is installed.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.code_scan import docstrings
from tests.support.paths import REPO

# Workspace member folder -> (distribution, import package).
MEMBERS = {
    "core": ("pzone-core", "pzone"),
    "firmware": ("pzone-firmware", "pzone_firmware"),
    "ingest_lambda": ("pzone-ingest", "pzone_ingest"),
    "serving/api": ("pzone-api", "pzone_api"),
    "serving/model": ("pzone-model", "pzone_model"),
    "pipelines": ("pzone-pipelines", "pzone_pipelines"),
    "training": ("pzone-training", "pzone_training"),
    "stack": ("pzone-stack", "pzone_stack"),
}
IMPORT_NAMES = {dist: package for dist, package in MEMBERS.values()}
WORKSPACE_MODULE = re.compile(r"\b(pzone(?:_[a-z]+)?)(?:\.[A-Za-z_][\w.]*)?\b")


def declared() -> dict[str, set[str]]:
    """Each member's workspace dependencies as declared in its pyproject.toml (extras included)."""
    graph: dict[str, set[str]] = {}
    for folder, (name, _package) in MEMBERS.items():
        project = tomllib.loads((REPO / folder / "pyproject.toml").read_text())["project"]
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
        graph[name] = {
            match.group(0) for text in requirements if (match := re.match(r"pzone-[a-z]+", text))
        } - {name}
    return graph


def closure(graph: dict[str, set[str]], dist: str) -> set[str]:
    seen: set[str] = set()
    todo = [dist]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def workspace_names_used(source: str) -> set[str]:
    """Workspace import packages a module imports or names in a string (docstrings aside)."""
    tree = ast.parse(source)
    skip = docstrings(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            # A module path in a string (importlib, entry points, mock.patch targets): the dotted form only.
            names |= {m.group(1) for m in WORKSPACE_MODULE.finditer(node.value) if "." in m.group(0)}
    return names & set(IMPORT_NAMES.values())


def sources(folder: str) -> list[Path]:
    return sorted((REPO / folder / "src").rglob("*.py"))


@pytest.mark.unit
@pytest.mark.parametrize("folder", sorted(MEMBERS))
def test_each_package_imports_only_what_it_declares(folder: str) -> None:
    graph = declared()
    dist, package = MEMBERS[folder]
    allowed = {IMPORT_NAMES[d] for d in closure(graph, dist)} | {package}
    wrong = {
        path.relative_to(REPO).as_posix(): sorted(used - allowed)
        for path in sources(folder)
        if (used := workspace_names_used(path.read_text(encoding="utf-8"))) - allowed
    }
    assert not wrong, f"{dist} may import {sorted(allowed)} only (its pyproject's dependencies): {wrong}"


@pytest.mark.unit
def test_the_layers_point_down() -> None:
    graph = declared()
    assert graph["pzone-core"] == set(), "core depends on no other workspace package"
    assert graph["pzone-firmware"] == set(), "the firmware runs on the device: it depends on nothing"
    assert all("pzone-stack" not in deps for deps in graph.values()), "nothing depends on the top floor"
    for dist in graph:  # no cycles: a package never reaches itself
        assert dist not in closure(graph, dist), dist


@pytest.mark.unit
def test_the_scan_sees_every_form_of_import() -> None:
    code = '''
"""A docstring may name pzone_api.main freely."""
import pzone_ingest.batch
from pzone_api import main
import importlib

def f():
    from pzone_model.service import PZoneTilt
    return importlib.import_module("pzone_stack.demo"), "pzone_training"
'''
    assert workspace_names_used(code) == {"pzone_ingest", "pzone_api", "pzone_model", "pzone_stack"}


@pytest.fixture(scope="module")
def core_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding pzone-core with its extras, at the lock's versions, and nothing else of
    the workspace (from uv's cache where it can)."""
    root = tmp_path_factory.mktemp("core-only")
    constraints = root / "constraints.txt"
    export = subprocess.run(
        ["uv", "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-workspace", "--package", "pzone-core",
         "--all-extras", "--output-file", str(constraints)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    venv = root / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    for command in (
        ["uv", "venv", "--quiet", "--python", sys.executable, str(venv)],
        ["uv", "pip", "install", "--quiet", "--link-mode", "symlink", "--python",
         str(venv / "bin" / "python"), "--constraint", str(constraints), f"{REPO / 'core'}[cli,images]"],
    ):  # fmt: skip
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    return venv / "bin" / "python"


IMPORT_EVERY_CORE_MODULE = """
import importlib, pkgutil, sys
import pzone
# Alembic runs env.py itself (it needs Alembic's context); every other module must import on its own.
names = sorted(m.name for m in pkgutil.walk_packages(pzone.__path__, "pzone.") if m.name != "pzone.migrations.env")
for name in names:
    importlib.import_module(name)
workspace = sorted({m.split(".")[0] for m in sys.modules if m.startswith("pzone_")})
print(" ".join(names))
print(" ".join(workspace) or "-")
"""


@pytest.mark.integration
def test_every_core_module_imports_with_only_core_installed(core_only: Path) -> None:
    listing = subprocess.run(
        [str(core_only), "-c", "import importlib.metadata as m; print(sorted(d.metadata['Name'] for d in m.distributions()))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "pzone-core" in listing.stdout and "pzone-api" not in listing.stdout, listing.stdout
    result = subprocess.run(
        [str(core_only), "-c", IMPORT_EVERY_CORE_MODULE],
        cwd=core_only.parents[2],  # not the repository: nothing may come from the checkout
        env={"PATH": os.environ["PATH"], "PYTHONNOUSERSITE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    imported, workspace = result.stdout.splitlines()
    root = REPO / "core" / "src"
    in_checkout = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for path in (root / "pzone").rglob("*.py")
        if not path.is_relative_to(root / "pzone" / "migrations" / "versions")  # Alembic loads these by path
    } - {"pzone", "pzone.migrations.env"}
    assert set(imported.split()) == in_checkout  # every module of the checkout was installed and imported
    assert workspace == "-", f"core pulled in {workspace}"


@pytest.mark.integration
def test_the_pzone_command_with_only_core_has_only_cores_commands(core_only: Path) -> None:
    result = subprocess.run(
        [str(core_only.with_name("pzone")), "--help"],
        env={"PATH": os.environ["PATH"], "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^│ (\w[\w-]*)\s", result.stdout.split("Commands")[1], re.M))
    assert listed == {"db", "logs"}


@pytest.mark.unit
def test_no_test_module_imports_another() -> None:
    """Helpers shared by tests live in tests/support, fixtures in a conftest: a test module is nobody's library."""
    offenders = {
        path.relative_to(REPO).as_posix(): sorted(used)
        for path in sorted((REPO / "tests").rglob("*.py"))
        if (used := {n for n in _imported_modules(path.read_text(encoding="utf-8")) if _is_test_module(n)})
    }
    assert not offenders, offenders


def _imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _is_test_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and any(part.startswith("test_") or part == "conftest" for part in parts[1:])
