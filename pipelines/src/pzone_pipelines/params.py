"""params.yaml: every stage's knobs in its own section, with a shared ``base.seed``; and the one reader of a stage's
mapping files (params.yaml, the JSON records earlier stages leave), which fails with a sentence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pzone.errors import UserError

PARAMS_FILE = Path("params.yaml")


class ParamsError(UserError, ValueError):
    """params.yaml is missing, unreadable or lacks a section a stage needs (a sentence for the user, no stack)."""


def read_mapping(path: Path, what: str, missing: str, error: type[Exception] = ParamsError) -> dict[str, Any]:
    """The mapping a YAML file holds (JSON when the name ends in ``.json``), or ``error`` with a sentence.

    ``what`` names the file in that sentence; ``missing`` says what to do when the file is not there.
    """
    kind, parse = ("JSON", json.loads) if path.suffix == ".json" else ("YAML", yaml.safe_load)
    try:
        data = parse(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} is missing: {missing}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise error(f"{what} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{what} must hold a mapping")
    return data


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params.yaml; ParamsError when it is missing, not YAML or not a mapping of sections."""
    return read_mapping(path, str(path), "run the stage from the project root")


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if not isinstance(value, dict):
        raise ParamsError(f"params.yaml has no '{name}' section")
    return value
