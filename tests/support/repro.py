"""A throwaway DVC project for `dvc repro` tests and benchmarks: the repository's dvc.yaml and stage code, its own
params, and a platform (SQLite + local object store + MLflow store) under the project's own ``.pzone``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pzone_pipelines.params import load_params
from pzone_stack import demo
from tests.support.paths import REPO


def make_project(root: Path, params: Mapping[str, Any] | None = None) -> Path:
    """The repository's pipeline in a fresh DVC project (the same copy `pzone demo` makes), with params overrides."""
    return demo.make_project(REPO, root, params or {})


def write_params(root: Path, overrides: Mapping[str, Any]) -> None:
    base = load_params(REPO / "params.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(demo.merge(base, overrides), sort_keys=False))


def project_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "MLFLOW_", "BENTOML_"))}
    env.update(
        PZONE_DATA_DIR=str(root / ".pzone"),
        # The project's own model store: never the user's (BentoML's default, where the package stage imports when
        # the variable is unset) nor the test session's.
        BENTOML_HOME=str(root / ".pzone" / "bentoml"),
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


def run_pzone(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``pzone ARGS`` in the project, on its own platform (``pzone promote`` as `pzone retrain` runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "pzone.cli", *args],
        cwd=root,
        env={**project_env(root), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def populate_platform(root: Path, count: int, seed: int, **kwargs: Any) -> Any:
    """Migrate the project's embedded database and seed it with ``count`` labeled-by-sensor photos."""
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine
    from pzone.migrations import upgrade
    from pzone.settings import CoreSettings
    from pzone.storage import object_store_from_settings
    from pzone_stack.photosim.seed import populate

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


def registry(root: Path) -> dict[str, str]:
    """The project's registered versions of ``pzone-tilt`` → their aliases, sorted and comma-separated (MLflow's own
    client on the project's store; empty when nothing is registered)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / '.pzone' / 'mlflow.db'}")
    found = client.search_model_versions("name='pzone-tilt'")
    # search results leave aliases out: ask for each version
    full = [client.get_model_version("pzone-tilt", str(v.version)) for v in found]
    return {str(v.version): ",".join(sorted(v.aliases)) for v in full}


def served_model(root: Path) -> str | None:
    """The version of ``pzone-tilt`` that the project's BentoML store calls ``latest`` (what the model tier serves),
    or None before any import. BentoML keeps the pointer as a file beside the model's versions."""
    latest = root / ".pzone" / "bentoml" / "models" / "pzone-tilt" / "latest"
    return latest.read_text().strip() if latest.exists() else None
