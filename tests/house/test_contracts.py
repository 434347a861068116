"""The model tier's contracts have one source: each test fails when a second spelling appears.

The HTTP contract (path, multipart field, the answer's keys, the serving gauge) is ``pzone.tier_contract``; the
service that ``bentoml serve`` runs is ``pzone_model.SERVICE`` (the root service.py, bentofile.yaml's entry point,
exposes it); the Bento's files are bentofile.yaml's ``include``, which the Dockerfile and dvc.yaml follow. The
contract and the service path are looked for by shape in the syntax tree of every module that could copy them: the
packages' sources, the tests' shared helpers and the benchmarks (test modules themselves may spell expected values
out). Docstrings may name them.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from pzone import tier_contract as contract
from pzone_model import SERVICE
from tests.support.code_scan import docstrings, module_constant, modules, where
from tests.support.paths import REPO

pytestmark = pytest.mark.unit

CONTRACT = "core/src/pzone/tier_contract.py"
SERVICE_HOME = "serving/model/src/pzone_model/__init__.py"
MODEL_SOURCES = REPO / "serving" / "model" / "src" / "pzone_model"
CORE_SOURCES = REPO / "core" / "src"

# The path as a whole string, a URL's tail or the bare route name (BentoML's tracing takes that).
PATH_SPELLING = re.compile(rf"^(\S*/)?{re.escape(contract.CLASSIFY_PATH.lstrip('/'))}$")
ITEM_KEYS = {contract.LABEL, contract.PROBS, contract.MODEL_VERSION, contract.IMAGE_SIZE}


def strings(tree: ast.Module) -> Iterator[tuple[ast.Constant, str]]:
    """Every string constant but docstrings (an f-string's literal parts included)."""
    skip = docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node, node.value


def text_spellings(path: str, tree: ast.Module) -> list[str]:
    """Strings that spell the route, the serving gauge, a multipart part of the field, or the service path."""
    found = []
    for node, value in strings(tree):
        if (
            PATH_SPELLING.match(value)
            or contract.SERVING_METRIC in value
            or f'name="{contract.IMAGES_FIELD}"' in value
            or (SERVICE in value and path != SERVICE_HOME)
        ):
            found.append(where(path, node))
    return found


def _constant(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def shape_spellings(path: str, tree: ast.Module) -> list[str]:
    """An answer built or read by hand (its ``results``, two keys of an item, an item's ``error`` object) and a
    multipart file list made or read by hand (the field name beside a file tuple, ``getlist``).

    The ``code``/``reason`` pair alone is not looked for: the API answers its own errors in that shape too."""
    found = []
    for node in ast.walk(tree):
        hit = False
        if isinstance(node, ast.Dict):
            keys = {k for k in map(_constant, node.keys) if k is not None}
            hit = (
                contract.RESULTS in keys
                or len(keys & ITEM_KEYS) >= 2
                or (keys == {contract.ERROR} and isinstance(node.values[0], ast.Dict))
            )
        elif isinstance(node, ast.Subscript):
            hit = _constant(node.slice) == contract.RESULTS
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            first = _constant(node.args[0])
            hit = (node.func.attr == "get" and first == contract.RESULTS) or (
                node.func.attr == "getlist" and first == contract.IMAGES_FIELD
            )
        elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
            hit = _constant(node.elts[0]) == contract.IMAGES_FIELD and isinstance(node.elts[1], ast.Tuple)
        if hit:
            found.append(where(path, node))
    return found


def test_the_tier_contract_is_spelled_in_one_place() -> None:
    spellings = [
        hit
        for path, tree in modules()
        if path != CONTRACT
        for check in (text_spellings, shape_spellings)
        for hit in check(path, tree)
    ]
    assert spellings == [], f"use pzone.tier_contract (the service path: pzone_model.SERVICE): {spellings}"


def test_the_contract_needs_nothing_the_model_tier_image_lacks() -> None:
    """The tier's image holds the Bento's packages and a few files of pzone-core: no httpx, no bentoml."""
    tree = ast.parse((REPO / CONTRACT).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    outside = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert outside <= {"pzone.tilt"}, outside


# --- the service and the Bento's sources ------------------------------------------------------------------------


def test_the_service_path_names_the_service_everywhere() -> None:
    module, _, name = SERVICE.partition(":")
    source = REPO / "serving" / "model" / "src" / (module.replace(".", "/") + ".py")
    assert name in {n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.ClassDef)}
    # bentofile.yaml's service (what `bentoml serve` and `bentoml build` run at the root) is that very class.
    entry, _, entry_name = yaml.safe_load((REPO / "bentofile.yaml").read_text())["service"].partition(":")
    assert entry_name == name
    exposed = [
        node
        for node in ast.parse((REPO / f"{entry.replace('.', '/')}.py").read_text()).body
        if isinstance(node, ast.ImportFrom)
        and node.module == module
        and any(alias.name == name and alias.asname in (None, name) for alias in node.names)
    ]
    assert exposed, f"{entry}.py must import {name} from {module}"
    dockerfile = (REPO / "Dockerfile").read_text()
    stage = dockerfile.split("AS pzone-model\n", 1)[1].split("\nFROM ", 1)[0]
    command = next(line for line in stage.splitlines() if line.startswith("CMD "))
    assert json.loads(command.removeprefix("CMD "))[:3] == ["bentoml", "serve", SERVICE]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert f"bentoml serve {SERVICE} " in " ".join(compose["services"]["pzone-model"]["command"])


def core_files_imported(start: list[Path]) -> set[str]:
    """The files of pzone-core that these files import, directly or through each other (relative to core/src)."""
    needed: set[str] = set()
    todo = list(start)
    while todo:
        names: set[str] = set()
        for node in ast.walk(ast.parse(todo.pop().read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pzone import x`: x may be a module
                names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        for name in sorted(n for n in names if n == "pzone" or n.startswith("pzone.")):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing pzone.x runs pzone/__init__.py first
                folder = CORE_SOURCES.joinpath(*parts[:depth])
                file = folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")
                rel = file.relative_to(CORE_SOURCES).as_posix()
                if file.is_file() and rel not in needed:
                    needed.add(rel)
                    todo.append(file)
    return needed


def test_the_bento_ships_every_file_the_tier_imports() -> None:
    """bentofile.yaml's include is the one list of the Bento's sources: the tier and exactly the core files it
    imports, each under a folder the root entry point puts on the import path (`pzone promote` builds from it, the
    demo's project copies it). The Dockerfile's pzone-model COPY: tests/deploy/test_container_images.py."""
    from pzone_training.bento import bento_sources

    sources = bento_sources(REPO)
    folders = module_constant(REPO / "service.py", "SOURCE_FOLDERS")
    assert "service.py" in sources
    assert all(s == "service.py" or any(s.startswith(f"{f}/") for f in folders) for s in sources), sources
    model = {p.relative_to(REPO).as_posix() for p in MODEL_SOURCES.rglob("*.py")}
    assert model <= set(sources)
    core = {s.removeprefix("core/src/") for s in sources if s.startswith("core/src/")}
    assert core_files_imported([REPO / "service.py", *sorted(MODEL_SOURCES.rglob("*.py"))]) == core
    assert set(sources) == {"service.py", *model, *(f"core/src/{c}" for c in core)}


@pytest.mark.parametrize(
    ("check", "code", "hits"),
    [
        (text_spellings, 'httpx.post(url + "/classify")', 1),
        (text_spellings, 'httpx.post(f"{url}/classify")', 1),
        (text_spellings, 'tracing = {"excluded_urls": "classify"}', 1),
        (text_spellings, 'GAUGE = "pzone_model_serving"', 1),
        (text_spellings, "PATTERN = rf'^pzone_model_serving{{(.*)}}'", 1),
        (text_spellings, 'part = f\'Content-Disposition: form-data; name="images"; filename="{i}"\'', 1),
        (text_spellings, 'argv = ["bentoml", "serve", "pzone_model.service:PZoneTilt"]', 1),
        (
            text_spellings,
            '"""POST /classify, read pzone_model_serving, serve pzone_model.service:PZoneTilt."""',
            0,
        ),
        (text_spellings, 'log("classify failed")', 0),
        (shape_spellings, 'return {"results": results}', 1),
        (shape_spellings, 'item = {"label": label, "probs": probs, "model_version": version}', 1),
        (shape_spellings, 'bad = {"error": {"code": code, "reason": reason}}', 1),
        (shape_spellings, 'detail = {"code": "not_found", "reason": "no such photo"}', 0),
        (shape_spellings, 'results = response.json()["results"]', 1),
        (shape_spellings, 'results = body.get("results")', 1),
        (shape_spellings, 'fields = form.getlist("images")', 1),
        (shape_spellings, 'files = [("images", ("a.jpg", data, "image/jpeg"))]', 1),
        (shape_spellings, 'row = {"model_version": v, "scored": n, "accuracy": a}', 0),
        (shape_spellings, 'size = int(meta["image_size"])', 0),
        (shape_spellings, 'session.run(None, {"images": batch})', 0),
    ],
)
def test_the_checks_find_what_they_look_for(
    check: Callable[[str, ast.Module], list[str]], code: str, hits: int
) -> None:
    assert len(check("x.py", ast.parse(code))) == hits
