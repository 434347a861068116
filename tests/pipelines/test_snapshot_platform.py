"""The snapshot stage on a real platform, SQLite and PostgreSQL: it leaves the database exactly as it found it, and
its manifest is the one the refresh-then-read path it replaced gives for the same state."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from pzone.db.engine import make_engine
from pzone.db.models import Base
from pzone.labels import LabelParams, labeled_photos, refresh_labels, set_manual_label
from pzone.settings import CoreSettings
from pzone.storage import object_store_from_settings
from pzone.tilt import TILT_CLASSES
from pzone_pipelines import snapshot as snap
from pzone_pipelines.params import load_params
from pzone_stack.photosim.seed import populate
from tests.support.paths import REPO


def platform_state(url: str) -> tuple[str | None, list[list[tuple[Any, ...]]]]:
    """The SQLite file's hash (None on PostgreSQL) and every row of every table."""
    database = make_url(url).database if url.startswith("sqlite") else None
    digest = hashlib.sha256(Path(database).read_bytes()).hexdigest() if database else None
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = [
                [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key.columns))]
                for table in Base.metadata.sorted_tables
            ]
    finally:
        engine.dispose()
    return digest, rows


@pytest.mark.integration
def test_the_snapshot_stage_writes_nothing_and_keeps_its_manifest(db_url: str, tmp_path: Path) -> None:
    settings = CoreSettings(data_dir=tmp_path / "pz")
    store = object_store_from_settings(settings)
    engine = make_engine(db_url)
    with Session(engine) as session:
        seeded = populate(
            session, store, 30, np.random.default_rng(7), devices=4, size=(96, 72), derivatives=False
        )
        # Stored sensor labels from other params (a 1 s window): the stage must compute its own, not read these.
        refresh_labels(session, LabelParams(window_s=1.0))
        set_manual_label(session, seeded.photos[0].photo_id, "fallen", None)  # the operator's label wins
        session.commit()
    engine.dispose()
    params = REPO / "params.yaml"
    before = platform_state(db_url)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PZONE_")}
    env.update(PZONE_DATA_DIR=str(settings.data_dir), PZONE_DATABASE_URL=db_url)
    out = tmp_path / "snapshot"
    done = subprocess.run(
        [sys.executable, "-m", "pzone_pipelines.snapshot", "--out", str(out), "--params", str(params)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert platform_state(db_url) == before  # not a row, not a byte

    # The path the stage replaced: refresh with params.yaml's labels, then read the stored ones.
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            refresh_labels(session, LabelParams.from_mapping(load_params(params)["labels"]))
            rows = labeled_photos(session)
            session.rollback()
    finally:
        engine.dispose()
    old = tmp_path / "old-snapshot"
    snap.take_snapshot(rows, store, old, classes=TILT_CLASSES, min_quality=0.0)
    for name in (snap.MANIFEST, snap.SKIPPED):
        assert (out / name).read_bytes() == (old / name).read_bytes(), name
    manifest = snap.read_manifest(out)
    assert len(manifest) >= 25 and any(entry.source == "manual" for entry in manifest)
