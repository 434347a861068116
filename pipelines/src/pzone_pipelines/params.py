"""params.yaml: every stage's knobs in its own section, with a shared ``base.seed``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or lacks a section a stage needs."""


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run the stage from the project root") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of sections")
    return data


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if not isinstance(value, dict):
        raise ParamsError(f"params.yaml has no '{name}' section")
    return value
