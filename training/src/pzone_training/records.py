"""The JSON records the training package reads and writes in a project (models/run.json, reports/decision.json,
reports/package.json): standard library only, so that `pzone promote` loads without torch until it runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read_record(path: Path) -> dict[str, Any]:
    """A JSON record (models/run.json, reports/*.json) as a dict; {} when it is missing or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    """A JSON record, sorted and indented (what `pzone promote` and this module write under reports/)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
