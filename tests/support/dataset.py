"""One seeded platform for the data scientist's loop: `pzone dataset seed`, run twice (it adds photos), into a folder
that the tests copy before they write (``dvc repro`` writes MLflow and BentoML stores beside the database).

Seeding takes about a minute (the local stack runs in real time), so the session seeds once (``seeded_platform`` in
tests/conftest.py). The params it labels with (a 5 s label window, so that the devices need to hold still only
briefly) and quick training params are :data:`QUICK_PARAMS`: a project that trains on the copy uses them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pzone_pipelines.params import load_params
from pzone_stack.demo import merge
from tests.support.paths import REPO

QUICK_PARAMS: dict[str, Any] = {
    "labels": {"window_s": 5},
    "prepare": {"image_size": 48, "val_fraction": 0.15, "test_fraction": 0.2},
    "train": {"epochs": 4, "batch_size": 32},
    "register": {"margin": 0.02, "min_macro_f1": 0.0},
}
# 32 devices: every class holds still somewhere within seconds; small photos render fast.
SEED_RUNS = (
    ("--photos", "60", "--devices", "32", "--interval-s", "0.1", "--photo-size", "160x120", "--seed", "0"),
    ("--photos", "15", "--devices", "32", "--interval-s", "0.1", "--photo-size", "160x120", "--seed", "1"),
)
PHOTOS = 75


@dataclass(frozen=True)
class SeededPlatform:
    """The seeded platform (``data_dir``: read it, copy it before writing) and each seed run's output."""

    data_dir: Path
    params: Mapping[str, Any]
    outputs: tuple[str, ...]

    def copy_to(self, target: Path) -> Path:
        """A private copy of the platform at ``target`` (for a project's ``.pzone``)."""
        shutil.copytree(self.data_dir, target)
        return target


def fresh_clone(target: Path) -> Path:
    """A `git clone` of the repository at ``target``, its files as in the working tree (committed or not, so that
    the clone matches the code the tests import); git-ignored files (a platform, data, models) are not copied."""
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True, capture_output=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source, copy = REPO / name, target / name
        if source.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
        elif copy.is_file():  # deleted in the working tree
            copy.unlink()
    subprocess.run(["git", "add", "-A"], cwd=target, check=True, capture_output=True)  # as if committed
    return target


def write_quick_params(root: Path) -> None:
    """The repository's params.yaml with :data:`QUICK_PARAMS` into ``root``."""
    params = merge(load_params(REPO / "params.yaml"), QUICK_PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a data scientist's shell: no PZONE_/MLFLOW_/BENTOML_ settings (embedded defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "MLFLOW_", "BENTOML_"))}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        COLUMNS="200",
        PYTHONUNBUFFERED="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        **extra,
    )
    return env


def in_clone(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` at the clone's root, in a data scientist's environment (embedded defaults, the clone's
    own BentoML store)."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=root,
        env=env or clean_env(BENTOML_HOME=str(root / ".pzone" / "bentoml")),
        capture_output=True,
        text=True,
        timeout=600,
    )


def seed_platform(root: Path) -> SeededPlatform:
    """`pzone dataset seed` twice in ``root`` (its params.yaml: the quick params), into ``root/.pzone``."""
    root.mkdir(parents=True, exist_ok=True)
    write_quick_params(root)
    outputs = []
    for args in SEED_RUNS:
        done = subprocess.run(
            [sys.executable, "-m", "pzone.cli", "--log-level", "WARNING", "dataset", "seed", *args],
            cwd=root,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise AssertionError(f"pzone dataset seed {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        outputs.append(done.stdout)
    return SeededPlatform(root / ".pzone", QUICK_PARAMS, tuple(outputs))


def remote_key(md5: str, prefix: str = "dvc") -> str:
    """Where DVC keeps the object ``md5`` under a remote's ``prefix`` (its ``files/md5`` layout)."""
    return f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}"


def dataset_keys(cache: Path, lock_text: str) -> dict[str, str]:
    """The remote key of every object of the lock's data outs (snapshot and prepare) → its path, read from the lock
    and, for a directory, its listing in the DVC cache."""
    keys: dict[str, str] = {}
    for stage in ("snapshot", "prepare"):
        for out in yaml.safe_load(lock_text)["stages"][stage]["outs"]:
            md5 = out["md5"]
            keys[remote_key(md5)] = out["path"]
            if md5.endswith(".dir"):
                listing = json.loads((cache / "files" / "md5" / md5[:2] / md5[2:]).read_text())
                for entry in listing:
                    keys[remote_key(entry["md5"])] = f"{out['path']}/{entry['relpath']}"
    return keys


def recorded_metrics(data_dir: Path, run_id: str) -> dict[str, Any]:
    """The test metrics the MLflow run ``run_id`` logged (``reports/metrics.json`` among its artifacts)."""
    found = list((data_dir / "mlartifacts").glob(f"**/{run_id}/artifacts/reports/metrics.json"))
    assert len(found) == 1, found
    return dict(json.loads(found[0].read_text()))
