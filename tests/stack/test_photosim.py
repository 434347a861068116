"""Simulated photos: the renderer, the database fixture, and `pzone simulate photos`."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from pzone.db.models import Device, Photo, SensorReading, User
from pzone.storage import LocalObjectStore
from pzone.telemetry import derive_angles
from pzone_stack.photosim.params import Lean, sample_params
from pzone_stack.photosim.render import lean_of, render_image, render_photo
from pzone_stack.photosim.scene import object_mask
from pzone_stack.photosim.seed import populate
from tests.support.api import api_process
from tests.support.ingest import wait_connected, worker_process
from tests.support.paths import REPO
from tests.support.services import MosquittoBroker


def _bbox(params_tilt: float, seed: int, **kwargs: object) -> tuple[int, int, int, int]:
    params = sample_params(params_tilt, np.random.default_rng(seed), **kwargs)  # type: ignore[arg-type]
    box = object_mask(params).getbbox()
    assert box is not None
    return box


# --- renderer ------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_same_rng_state_same_photo_and_another_state_another() -> None:
    first = render_photo(35.0, np.random.default_rng(7))
    assert render_photo(35.0, np.random.default_rng(7)) == first
    assert render_photo(35.0, np.random.default_rng(8)) != first
    rng = np.random.default_rng(7)
    assert render_photo(35.0, rng) == first and render_photo(35.0, rng) != first  # the state moves on


@pytest.mark.unit
@pytest.mark.parametrize("size", [(640, 480), (320, 240), (480, 640), (128, 96)])
def test_valid_jpegs_of_every_size_and_angle(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    for tilt in (0.0, 12.5, 30.0, 59.0, 75.0, 90.0):
        data = render_photo(tilt, rng, size=size, quality=80)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.size == size and im.mode == "RGB"
            im.load()  # full decode: not truncated
        image = render_image(tilt, rng, size=size)
        assert image.size == size and image.mode == "RGB"


@pytest.mark.unit
def test_photo_carries_the_moment_it_was_taken_in_exif() -> None:
    moment = datetime(2025, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
    data = render_photo(10.0, np.random.default_rng(0), taken_at=moment)
    with Image.open(io.BytesIO(data)) as im:
        ifd = im.getexif().get_ifd(ExifTags.IFD.Exif)
    assert ifd[ExifTags.Base.DateTimeOriginal] == "2025:03:04 05:06:07"
    assert ifd[ExifTags.Base.SubsecTimeOriginal] == "891"
    assert ifd[ExifTags.Base.OffsetTimeOriginal] == "+00:00"
    with Image.open(io.BytesIO(render_photo(10.0, np.random.default_rng(0)))) as im:
        assert ExifTags.Base.DateTimeOriginal not in im.getexif().get_ifd(ExifTags.IFD.Exif)


@pytest.mark.unit
def test_tilt_shows_in_the_objects_shape() -> None:
    """Same scene, other tilt: a standing scooter is tall and narrow, a fallen one low and wide."""
    for seed in range(12):
        x0, y0, x1, y1 = _bbox(0.0, seed)
        standing = (y1 - y0) / (x1 - x0)
        x0, y0, x1, y1 = _bbox(90.0, seed)
        lying = (y1 - y0) / (x1 - x0)
        x0, y0, x1, y1 = _bbox(40.0, seed)
        leaning = (y1 - y0) / (x1 - x0)
        assert standing > 1.5 and standing * 0.85 > leaning > lying and lying < 0.85, (
            seed,
            standing,
            leaning,
            lying,
        )


@pytest.mark.unit
def test_lean_side_shows_and_the_scooter_is_in_frame() -> None:
    for seed in range(10):
        sides: tuple[tuple[Lean, int], ...] = (("left", -1), ("right", 1))
        for lean, sign in sides:
            params = sample_params(45.0, np.random.default_rng(seed), lean=lean)
            mask = np.asarray(object_mask(params)) > 127
            rows = np.flatnonzero(mask.any(axis=1))
            top = mask[rows[0] : rows[0] + max(2, len(rows) // 5)]
            bottom = mask[rows[-1] - max(2, len(rows) // 5) : rows[-1] + 1]
            top_x = np.flatnonzero(top.any(axis=0)).mean()
            bottom_x = np.flatnonzero(bottom.any(axis=0)).mean()
            assert sign * (top_x - bottom_x) > 0, (seed, lean, top_x, bottom_x)
    for seed in range(20):
        w, h = 640, 480
        x0, y0, x1, y1 = _bbox(float(seed % 3) * 2.0, seed, size=(w, h))
        assert 0 < x0 < x1 < w and 0 < y0 < y1 < h
        assert 0.3 <= (y1 - y0) / h <= 0.92  # standing: a good part of the frame's height


@pytest.mark.unit
def test_bad_arguments_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        render_photo(-1.0, rng)
    with pytest.raises(ValueError):
        render_photo(float("nan"), rng)
    with pytest.raises(ValueError):
        render_photo(10.0, rng, lean="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        render_photo(10.0, rng, size=(16, 16))
    assert lean_of(90.0) == "right" and lean_of(270.0) == "left"


# --- the database fixture ------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_populate_writes_photos_and_the_readings_that_label_them(db_url: str, tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", b"k" * 32)
    engine = create_engine(db_url)
    try:
        with Session(engine) as session:
            first = populate(session, store, 24, np.random.default_rng(5), devices=3, readings_per_photo=5)
        with Session(engine) as session:  # again: the devices and zone are reused, sequence numbers go on
            second = populate(session, store, 6, np.random.default_rng(6), devices=3, user_id=first.user_id)
        with Session(engine) as session:
            photos = session.scalars(select(Photo)).all()
            assert len(photos) == 30 and {p.status for p in photos} == {"stored"}
            assert session.scalar(select(func.count()).select_from(SensorReading)) == 30 * 5
            user = session.get(User, first.user_id)
            assert user is not None and not user.is_active
            by_id = {p.id: p for p in photos}
            for seeded in first.photos + second.photos:
                photo = by_id[seeded.photo_id]
                assert photo.device_id == seeded.device_id and photo.sha256 == seeded.sha256
                data = store.get_bytes(photo.original_key or "")
                assert hashlib.sha256(data).hexdigest() == photo.sha256
                assert photo.original_key == f"originals/{photo.sha256[:2]}/{photo.sha256}.jpg"
                assert store.exists(photo.thumb_key or "") and store.exists(photo.preview_key or "")
                with Image.open(io.BytesIO(data)) as im:
                    assert (im.width, im.height) == (photo.width, photo.height) == (320, 240)
                taken = photo.taken_at
                assert taken is not None
                taken = taken if taken.tzinfo else taken.replace(tzinfo=UTC)
                assert abs(taken - seeded.taken_at) < timedelta(milliseconds=2)
                window = session.scalars(
                    select(SensorReading).where(
                        SensorReading.device_id == photo.device_id,
                        SensorReading.received_at >= taken - timedelta(seconds=3),
                        SensorReading.received_at <= taken + timedelta(seconds=3),
                    )
                ).all()
                assert len(window) == 5
                for reading in window:  # the stored readings agree with the photo's true tilt
                    assert abs(reading.tilt_deg - seeded.tilt_deg) < 2.0
                    assert derive_angles(reading.ax, reading.ay, reading.az).tilt_deg == pytest.approx(
                        reading.tilt_deg
                    )
                assert {r.state for r in window} == {seeded.state}  # the 2° margin keeps noise in class
            states = {p.state for p in first.photos}
            assert states == {"upright", "tilted", "fallen"}
            for device_id in first.device_ids:
                device = session.get(Device, device_id)
                seqs = session.scalars(
                    select(SensorReading.seq).where(SensorReading.device_id == device_id)
                ).all()
                assert device is not None and device.last_seq == max(seqs)
                assert sorted(seqs) == list(range(len(seqs)))
    finally:
        engine.dispose()


# --- pzone simulate photos, end to end -----------------------------------------------------------------------------
@pytest.mark.e2e
def test_simulate_photos_through_api_broker_and_ingest(
    pg_url: str, broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PZONE_REDIS_URL", "PZONE_MODEL_TIER_URL", "PZONE_S3_BUCKET", "PZONE_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)  # the local object store; photos processed in the API process
    env = {
        "PZONE_DATABASE_URL": pg_url,
        "PZONE_DATA_DIR": str(tmp_path / "api"),
    }  # Secure cookies: the default
    worker = worker_process(pg_url, broker.url, "photosim-worker")
    drained: list[str] = []
    try:
        wait_connected(worker)
        assert worker.stdout is not None
        drain = threading.Thread(target=lambda: drained.extend(worker.stdout or []), daemon=True)
        drain.start()
        with api_process(env) as base_url:
            args = (
                f"simulate photos --count 5 --api {base_url} --devices 3 --mqtt-url {broker.url} "
                "--interval 0.3 --seed 4 --zone zone-cam"
            ).split()
            done = subprocess.run(
                [sys.executable, "-m", "pzone.cli", *args],
                env={**os.environ, "PZONE_DATA_DIR": str(tmp_path / "sim"), "COLUMNS": "200"},
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=240,
            )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "5 photos uploaded, 0 failed" in done.stdout
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    engine = create_engine(pg_url)
    try:
        with Session(engine) as session:
            photos = session.scalars(select(Photo)).all()
            assert len(photos) == 5 and {p.status for p in photos} == {"stored"}
            assert {p.zone_id for p in photos} == {"zone-cam"}
            for photo in photos:
                assert photo.taken_at is not None and photo.taken_at_source == "exif"
                near = session.scalar(
                    select(func.count())
                    .select_from(SensorReading)
                    .where(
                        SensorReading.device_id == photo.device_id,
                        SensorReading.received_at >= photo.taken_at - timedelta(seconds=2),
                        SensorReading.received_at <= photo.taken_at + timedelta(seconds=2),
                    )
                )
                assert near and near >= 2, (photo.device_id, photo.taken_at)
    finally:
        engine.dispose()
