"""The docs name real code: every module, class or function a document names in backticks exists under that name.

A move or a rename that forgets a document fails here, so architecture.md's map and the READMEs stay navigable.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.unit

DOCUMENTS = sorted(
    p
    for p in [
        REPO / "README.md",
        *REPO.glob("docs/*.md"),
        *REPO.glob("*/README.md"),
        *REPO.glob("*/*/README.md"),
    ]
    if "node_modules" not in p.parts and ".venv" not in p.parts
)
DOTTED = re.compile(r"`((?:pzone|pzone_[a-z]+)(?:\.[A-Za-z_]\w*)+)")
# Dotted names that are not Python: the entry-point group of the commands, a Kubernetes label prefix.
NOT_CODE = {"pzone.commands", "pzone.io"}
FILE_SUFFIXES = (".json", ".yaml", ".yml", ".py", ".toml", ".log", ".db", ".mpy")


def resolve(name: str) -> object | None:
    """The module or attribute a dotted name stands for, or None."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: ModuleType | object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, None)
            if found is None:
                return None
        return found
    return None


def test_every_name_the_docs_give_exists() -> None:
    named = {
        (path.relative_to(REPO).as_posix(), name)
        for path in DOCUMENTS
        for name in DOTTED.findall(path.read_text(encoding="utf-8"))
        if name not in NOT_CODE and not name.endswith(FILE_SUFFIXES)
    }
    assert len(named) > 50  # the documents were read
    missing = sorted(f"{doc}: {name}" for doc, name in named if resolve(name) is None)
    assert not missing, missing


def test_the_check_tells_real_names_from_stale_ones() -> None:
    assert resolve("pzone.tilt.TILT_CLASSES") is not None and resolve("pzone.cli.common") is not None
    assert resolve("pzone.retrain") is None and resolve("pzone_api.verdicts.classify_photos") is None
