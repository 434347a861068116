"""`pzone dataset seed`: a local dataset through the real intake, run twice (it adds photos); what it refuses; the
pose clock that makes its photos' labels see one pose."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pzone.db.engine import make_engine
from pzone.db.models import Device, Photo, PhotoLabel, User
from pzone.tilt import TILT_CLASSES
from pzone_stack.dataset_seed import EXTERNAL, external_services, parse_size
from pzone_stack.photosim.photographer import PoseClock, Thresholds, pick_by_class
from tests.support.dataset import PHOTOS, SEED_RUNS, SeededPlatform, clean_env, write_quick_params


@dataclass
class Pose:
    """A device's true pose, as the fleet's tilt model exposes it."""

    tilt: float
    target: float

    def current(self) -> tuple[float, float]:
        return self.tilt, 0.0


@pytest.mark.unit
def test_the_pose_clock_counts_how_long_a_device_has_held_its_pose() -> None:
    now = [0.0]
    models = {"a": Pose(3.0, 3.0), "b": Pose(85.0, 85.0), "c": Pose(30.0, 45.0)}  # c is still falling
    clock = PoseClock(models, Thresholds(), clock=lambda: now[0])
    assert clock.held(0.0) == {"upright": ["a"], "fallen": ["b"]}
    now[0] = 10.0
    models["c"].tilt = 45.0  # c came to rest, leaning
    assert clock.held(5.0) == {"upright": ["a"], "fallen": ["b"]}
    models["a"].tilt = models["a"].target = 40.0  # a was knocked over: its clock starts again
    now[0] = 16.0
    assert clock.held(5.0) == {"fallen": ["b"], "tilted": ["c"]}
    # the pick takes only devices that held their pose, a class first
    picked = {
        pick_by_class(Thresholds(), poses=clock, hold_s=5.0)(models, np.random.default_rng(i))
        for i in range(40)
    }
    assert picked == {"b", "c"}


@pytest.mark.unit
@pytest.mark.parametrize("text", ["480", "480x", "x360", "48x360", "480x36000", "4.5x300", "axb"])
def test_bad_photo_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--photo-size"):
        parse_size(text)
    assert parse_size("480X360") == (480, 360)


def seed(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pzone.cli", "dataset", "seed", *args],
        cwd=root,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.unit
@pytest.mark.parametrize("variable", EXTERNAL)
def test_each_real_service_variable_is_named(variable: str) -> None:
    assert external_services({variable: "x", "PZONE_DATA_DIR": "/tmp/pz"}) == [variable]
    assert external_services({variable: ""}) == []


@pytest.mark.integration
def test_real_services_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    write_quick_params(tmp_path)
    real = {"PZONE_DATABASE_URL": "postgresql://real.example/pzone", "PZONE_MQTT_URL": "mqtts://real.example"}
    done = seed(tmp_path, "--photos", "3", **real)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "fills the embedded platform only" in done.stdout and all(name in done.stdout for name in real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.integration
def test_outside_a_project_it_says_so(tmp_path: Path) -> None:
    done = seed(tmp_path, "--photos", "3")
    assert done.returncode == 2 and "no params.yaml" in done.stdout, done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
@pytest.mark.slow
def test_seed_fills_the_platform_through_the_intake_and_adds_on_a_second_run(
    seeded_platform: SeededPlatform,
) -> None:
    first, second = seeded_platform.outputs
    for output in (first, second):
        assert "next: uv run dvc repro" in output, output
    counts = re.search(
        r"labeled photos by class \(params.yaml labels\): (.*) — (\d+) of (\d+) stored", second
    )
    assert counts is not None, second
    by_class = dict(item.split() for item in counts.group(1).split(", "))
    assert set(by_class) == set(TILT_CLASSES) and all(int(n) > 0 for n in by_class.values()), second
    assert int(counts.group(3)) == PHOTOS  # the second run added its photos to the first's

    engine = make_engine(f"sqlite:///{seeded_platform.data_dir / 'pzone.db'}")
    try:
        with Session(engine) as session:
            photos = session.execute(select(Photo.status, Photo.thumb_key, Photo.device_id)).all()
            devices = session.scalar(select(func.count()).select_from(Device))
            users = session.scalar(select(func.count()).select_from(User))
            labeled = session.scalar(
                select(func.count()).select_from(PhotoLabel).where(PhotoLabel.label.is_not(None))
            )
            second_run = session.scalars(
                select(PhotoLabel.label)
                .join(Photo, Photo.id == PhotoLabel.photo_id)
                .order_by(Photo.taken_at.desc())
                .limit(PHOTOS - int(SEED_RUNS[0][SEED_RUNS[0].index("--photos") + 1]))
            ).all()
    finally:
        engine.dispose()
    fleet = int(SEED_RUNS[0][SEED_RUNS[0].index("--devices") + 1])
    assert len(photos) == PHOTOS and all(status == "stored" and thumb for status, thumb, _ in photos)
    assert devices == fleet and users == len(SEED_RUNS)  # the same devices both times; one client per run
    assert labeled == int(counts.group(2)) and labeled >= PHOTOS // 2
    # the second run's readings were stored (its devices' sequence numbers went on) and label its photos
    assert sum(label is not None for label in second_run) >= len(second_run) // 2, second_run
    assert os.path.isdir(seeded_platform.data_dir / "objects")
