"""A data scientist's first steps in a fresh clone: `dvc repro` with no platform says how to get data (no traceback,
nothing written); with a seeded platform it runs end to end, and a second `dvc repro` changes nothing."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.dataset import SeededPlatform, clean_env, fresh_clone, in_clone, write_quick_params
from tests.support.services import free_port

GET_DATA = ("pzone dataset pull", "pzone dataset seed")


def new_files(root: Path) -> list[str]:
    """Files git does not track (ignored ones included), but DVC's own lock and state folder."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=root, check=True, capture_output=True, text=True
    )
    lines = status.stdout.splitlines()
    return [line for line in lines if line.startswith(("??", "!!")) and line != "!! .dvc/tmp/"]


@pytest.mark.e2e
def test_a_fresh_clone_without_a_platform_says_how_to_get_data(tmp_path: Path) -> None:
    root = fresh_clone(tmp_path / "clone")
    done = in_clone(root, "dvc", "repro")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "Traceback" not in out and "OperationalError" not in out, out
    assert "error: there is no platform database at" in out, out
    assert all(command in out for command in GET_DATA), out
    assert new_files(root) == []  # nothing written: no data folder, no database, no dvc.lock


@pytest.mark.integration
@pytest.mark.parametrize("platform", ["never migrated", "unreachable", "empty"])
def test_the_snapshot_stage_names_the_ways_to_get_data(tmp_path: Path, platform: str) -> None:
    """The stage `dvc repro` runs first, on each platform a clone may find; none is changed by it."""
    root = fresh_clone(tmp_path / "clone")
    data_dir = root / ".pzone"
    data_dir.mkdir()
    env = clean_env()
    if platform == "never migrated":
        sqlite3.connect(data_dir / "pzone.db").close()  # an empty database file
        expected = "schema revision none (never migrated)"
    elif platform == "unreachable":
        env["PZONE_DATABASE_URL"] = f"postgresql+psycopg://pzone@127.0.0.1:{free_port()}/pzone"
        expected = "cannot reach the database at postgresql+psycopg://pzone@127.0.0.1:"
    else:
        from pzone.migrations import upgrade

        upgrade(f"sqlite:///{data_dir / 'pzone.db'}")
        expected = "error: no labeled photos to snapshot"
    database = data_dir / "pzone.db"
    before = database.read_bytes() if database.exists() else None
    done = in_clone(root, "pzone_pipelines.snapshot", env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out and "\nerror: " in f"\n{out}" and expected in out, out
    assert all(command in out for command in GET_DATA), out
    assert (database.read_bytes() if database.exists() else None) == before


@pytest.mark.e2e
@pytest.mark.slow
def test_seed_then_repro_runs_end_to_end_and_again_changes_nothing(
    tmp_path: Path, seeded_platform: SeededPlatform
) -> None:
    root = fresh_clone(tmp_path / "clone")
    seeded_platform.copy_to(root / ".pzone")
    write_quick_params(root)  # the labels the platform was seeded with, and a quick training
    first = in_clone(root, "dvc", "repro")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert (root / "reports" / "metrics.json").is_file()
    lock = (root / "dvc.lock").read_text()

    again = in_clone(root, "dvc", "repro")
    assert again.returncode == 0, again.stdout + again.stderr
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for stage in stages:
        if stage != "snapshot":  # always looks at the platform; its output is the same, so nothing follows
            assert f"Stage '{stage}' didn't change, skipping" in again.stdout, again.stdout
    assert (root / "dvc.lock").read_text() == lock
