"""The demo's copy of the project: the repository's pipeline, the sources its stages run and the promotion builds
into the Bento, and demo-sized params.

`dvc repro` runs in the copy, so the user's ``params.yaml``, ``data/`` and ``dvc.lock`` are never touched.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pzone_pipelines.params import PARAMS_FILE, load_params
from pzone_training.bento import BENTOFILE, bento_sources


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def make_project(repo: Path, root: Path, overrides: Mapping[str, Any]) -> Path:
    """A DVC project at ``root``: the repository's dvc.yaml, every source its stages depend on (not the pipeline's
    outputs), the model tier's Bento sources (bentofile.yaml's), and params.yaml with ``overrides``;
    ``dvc init --no-scm``."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))
    shutil.copy(repo / "dvc.yaml", root / "dvc.yaml")
    outputs = {
        next(iter(out)) if isinstance(out, dict) else out
        for stage in pipeline["stages"].values()
        for key in ("outs", "metrics", "plots")
        for out in stage.get(key, [])
    }
    deps = [dep for stage in pipeline["stages"].values() for dep in stage.get("deps", [])]
    # The promotion path (`pzone promote`, which retrain runs) builds the model tier's Bento in the project.
    for dep in [*deps, BENTOFILE, *bento_sources(repo)]:
        if any(dep == out or dep.startswith(f"{out}/") for out in outputs):
            continue
        source, target = repo / dep, root / dep
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy(source, target)
    params = merge(load_params(repo / PARAMS_FILE), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for args in (("init", "--no-scm", "-q", "-f"), ("config", "core.analytics", "false")):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True, capture_output=True)
    return root
