"""A throwaway DVC project for `dvc repro` tests and benchmarks: the repository's dvc.yaml and stage code, its own
params, and a platform (SQLite + local object store + MLflow store) under the project's own ``.pzone``."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def make_project(root: Path, params: Mapping[str, Any] | None = None) -> Path:
    """Copy dvc.yaml and every source its stages depend on (not the pipeline's own outputs); write params.yaml
    (the repository's, with overrides)."""
    root.mkdir(parents=True, exist_ok=True)
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    outputs = {
        next(iter(out)) if isinstance(out, dict) else out
        for stage in pipeline["stages"].values()
        for key in ("outs", "metrics", "plots")
        for out in stage.get(key, [])
    }
    for stage in pipeline["stages"].values():
        for dep in stage.get("deps", []):
            if any(dep == out or dep.startswith(f"{out}/") for out in outputs):
                continue
            source, target = REPO / dep, root / dep
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(
                    source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            elif source.is_file():
                shutil.copy(source, target)
    write_params(root, params or {})
    run_dvc(root, "init", "--no-scm", "-q")
    run_dvc(root, "config", "core.analytics", "false")
    return root


def write_params(root: Path, overrides: Mapping[str, Any]) -> None:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(_merge(base, overrides), sort_keys=False))


def project_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "MLFLOW_"))}
    env.update(
        PZONE_DATA_DIR=str(root / ".pzone"),
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_dvc(
    root: Path, *args: str, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env=project_env(root),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"dvc {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


def populate_platform(root: Path, count: int, seed: int, **kwargs: Any) -> Any:
    """Migrate the project's embedded database and seed it with ``count`` labeled-by-sensor photos."""
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine
    from pzone.migrations import upgrade
    from pzone.photosim.seed import populate
    from pzone.settings import CoreSettings
    from pzone.storage import object_store_from_settings

    settings = CoreSettings(data_dir=root / ".pzone")
    upgrade(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with Session(engine) as session:
            return populate(
                session, object_store_from_settings(settings), count, np.random.default_rng(seed), **kwargs
            )
    finally:
        engine.dispose()
