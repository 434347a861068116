"""A synthetic platform state written straight into the database and the object store.

**A fixture for tests and benchmarks, not a product path.** It skips the API, the broker and the ingest: it writes
what they would have left behind, fast — a zone, devices, ``sensor_readings`` rows around each photo (ax/ay/az of
the true tilt with sensor noise, angles and state derived by :mod:`pzone.telemetry` as the ingest does, sequence
numbers per device, ``received_at`` a little after ``measured_at``), and ``photos`` rows as a completed intake leaves
them (status ``stored``, the original JPEG in the store content-addressed at ``originals/<sha[:2]>/<sha>.jpg``,
``derived/thumb`` and ``derived/preview`` beside it, ``taken_at`` from the EXIF time the JPEG carries). It does not
open alarms, write dead letters, or check the images the way the intake does. Hundreds of photos take seconds.

Usage::

    with Session(engine) as session:
        seeded = populate(session, store, 500, np.random.default_rng(0))
    [(p.photo_id, p.state) for p in seeded.photos]   # the true class of each photo, for checks
"""

from __future__ import annotations

import hashlib
import io
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from pzone.db.models import Device, Photo, SensorReading, User, Zone, table_of
from pzone.storage import ObjectStore, content_addressed_key
from pzone.telemetry import derive_angles
from pzone.tilt import FALLEN_MIN_DEG, UPRIGHT_MAX_DEG, classify_tilt
from pzone_api.intake import DERIVATIVE_SIZES
from pzone_stack.photosim.params import sample_params
from pzone_stack.photosim.render import encode_jpeg, lean_of
from pzone_stack.photosim.scene import draw

NO_LOGIN_HASH = "!seeded: no password"  # not an argon2 hash: verifying any password against it fails


@dataclass(frozen=True, slots=True)
class SeededPhoto:
    photo_id: str
    device_id: str
    taken_at: datetime
    tilt_deg: float  # the true tilt the photo shows
    state: str  # its class by the default thresholds (20°/60°)
    sha256: str


@dataclass(frozen=True, slots=True)
class Populated:
    user_id: str
    zone_id: str
    device_ids: list[str]
    photos: list[SeededPhoto]
    readings: int


def balanced_tilt(
    rng: np.random.Generator,
    *,
    upright_max_deg: float = UPRIGHT_MAX_DEG,
    fallen_min_deg: float = FALLEN_MIN_DEG,
    margin_deg: float = 2.0,
) -> float:
    """A tilt from a class chosen uniformly (upright, tilted, fallen), uniform within it, ``margin_deg`` away from
    the thresholds (so that sensor noise does not move it to the next class)."""
    ranges = (
        (0.0, upright_max_deg - margin_deg),
        (upright_max_deg + margin_deg, fallen_min_deg - margin_deg),
        (fallen_min_deg + margin_deg, 90.0),
    )
    low, high = ranges[int(rng.integers(3))]
    return float(rng.uniform(low, high))


def accelerations(
    tilt_deg: float, azimuth_deg: float, rng: np.random.Generator, noise_g: float = 0.004
) -> tuple[float, float, float]:
    """(ax, ay, az) in g of a resting sensor at this tilt and lean direction, with white noise (the contract's axes:
    z up when the object stands)."""
    th, ph = math.radians(tilt_deg), math.radians(azimuth_deg)
    ideal = (math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th))
    ax, ay, az = (round(v + float(rng.normal(0.0, noise_g)), 5) for v in ideal)
    return ax, ay, az


def _derivative(image: Image.Image, side: int) -> bytes:
    copy = image.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    copy.save(out, "JPEG", quality=85)
    return out.getvalue()


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def populate(
    session: Session,
    store: ObjectStore,
    count: int,
    rng: np.random.Generator,
    *,
    devices: int = 8,
    zone_id: str = "zone-seed",
    user_id: str | None = None,
    start: datetime | None = None,
    size: tuple[int, int] = (320, 240),
    spacing_s: float = 120.0,
    readings_per_photo: int = 5,
    reading_interval_s: float = 1.0,
    tilt: Callable[[np.random.Generator], float] = balanced_tilt,
    derivatives: bool = True,
    exif: bool = True,
    batch_size: int = 1000,
) -> Populated:
    """Write ``count`` stored photos of ``devices`` devices in ``zone_id``, with the readings that label them; commits.

    Each photo shows its device at a tilt drawn by ``tilt(rng)``; ``readings_per_photo`` readings every
    ``reading_interval_s`` are centred on its ``taken_at``. Photos of one device are ``spacing_s`` apart (their
    reading windows never overlap), from ``start`` (default: ``count * spacing_s`` before now). Devices and the zone
    are reused when they exist (sequence numbers continue after the stored ones). ``user_id``: the photos' owner;
    default a new, inactive ``client`` that cannot log in. The same ``rng`` state writes the same state.
    """
    if count < 0 or devices < 1 or readings_per_photo < 1:
        raise ValueError("count must be >= 0, devices and readings_per_photo >= 1")
    begin = start if start is not None else datetime.now(UTC) - timedelta(seconds=count * spacing_s + 60)
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=UTC)
    if session.get(Zone, zone_id) is None:
        session.add(Zone(id=zone_id, name="seeded (photosim)", created_at=begin))
    if user_id is None:
        user_id = _uuid(rng)
        session.add(
            User(
                id=user_id,
                email=f"seed-{user_id[:12]}@example.invalid",
                password_hash=NO_LOGIN_HASH,
                role="client",
                is_active=False,
                created_at=begin,
            )
        )
    device_ids = [f"seed-{zone_id}-{i:04d}"[:64] for i in range(devices)]
    next_seq: dict[str, int] = {}
    for device_id in device_ids:
        if session.get(Device, device_id) is None:
            session.add(
                Device(id=device_id, zone_id=zone_id, created_at=begin, status="online", status_at=begin)
            )
        stored = session.scalar(
            select(func.max(SensorReading.seq)).where(SensorReading.device_id == device_id)
        )
        next_seq[device_id] = 0 if stored is None else int(stored) + 1
    session.flush()

    clock = {d: begin + timedelta(seconds=float(rng.uniform(0, spacing_s))) for d in device_ids}
    azimuth = {d: float(rng.uniform(0, 360)) for d in device_ids}
    battery = {d: float(rng.uniform(40, 100)) for d in device_ids}
    last: dict[str, dict[str, Any]] = {}
    readings: list[dict[str, Any]] = []
    photos: list[dict[str, Any]] = []
    seeded: list[SeededPhoto] = []
    total_readings = 0

    def flush() -> None:
        nonlocal readings, photos
        if readings:
            session.execute(insert(table_of(SensorReading)), readings)
        if photos:
            session.execute(insert(table_of(Photo)), photos)
        readings, photos = [], []

    for _ in range(count):
        device_id = device_ids[int(rng.integers(devices))]
        taken_at = clock[device_id]
        clock[device_id] = taken_at + timedelta(seconds=spacing_s * float(rng.uniform(0.8, 1.2)))
        true_tilt = float(tilt(rng))
        if rng.random() < 0.3:  # picked up or knocked over again: a new direction of lean
            azimuth[device_id] = float(rng.uniform(0, 360))
        lean = lean_of(azimuth[device_id])
        for k in range(readings_per_photo):
            at = taken_at + timedelta(seconds=(k - (readings_per_photo - 1) / 2) * reading_interval_s)
            at += timedelta(seconds=float(rng.uniform(-0.05, 0.05)))
            ax, ay, az = accelerations(true_tilt + float(rng.normal(0, 0.3)), azimuth[device_id], rng)
            angles = derive_angles(ax, ay, az)
            battery[device_id] = max(5.0, battery[device_id] - 0.001)
            row: dict[str, Any] = {
                "device_id": device_id,
                "zone_id": zone_id,
                "seq": next_seq[device_id],
                "device_ts": at,
                "received_at": at + timedelta(seconds=float(rng.uniform(0.02, 0.3))),
                "measured_at": at,
                "ax": ax,
                "ay": ay,
                "az": az,
                "battery": round(battery[device_id], 2),
                "tilt_deg": angles.tilt_deg,
                "pitch_deg": angles.pitch_deg,
                "roll_deg": angles.roll_deg,
                "state": classify_tilt(angles.tilt_deg, UPRIGHT_MAX_DEG, FALLEN_MIN_DEG).value,
            }
            next_seq[device_id] += 1
            readings.append(row)
            last[device_id] = row
        total_readings += readings_per_photo

        params = sample_params(true_tilt, rng, size=size, lean=lean)
        image = draw(params)
        data = encode_jpeg(image, params.quality, taken_at if exif else None)
        sha = hashlib.sha256(data).hexdigest()
        original = content_addressed_key("originals", sha, "jpg")
        if store.head(original) is None:  # same bytes twice = one object, as in the intake
            store.put_bytes(original, data, "image/jpeg")
        keys = {}
        for name, side in DERIVATIVE_SIZES.items():
            keys[name] = content_addressed_key(f"derived/{name}", sha, "jpg")
            if derivatives and store.head(keys[name]) is None:
                store.put_bytes(keys[name], _derivative(image, side), "image/jpeg")
        created = taken_at + timedelta(seconds=float(rng.uniform(1.0, 20.0)))
        photo_id = _uuid(rng)
        photos.append(
            {
                "id": photo_id,
                "user_id": user_id,
                "device_id": device_id,
                "zone_id": zone_id,
                "status": "stored",
                "upload_key": None,
                "declared_content_type": "image/jpeg",
                "client_taken_at": taken_at,
                "sha256": sha,
                "original_key": original,
                "thumb_key": keys["thumb"] if derivatives else None,
                "preview_key": keys["preview"] if derivatives else None,
                "content_type": "image/jpeg",
                "size_bytes": len(data),
                "width": size[0],
                "height": size[1],
                "taken_at": taken_at.replace(microsecond=(taken_at.microsecond // 1000) * 1000)
                if exif
                else taken_at,
                "taken_at_source": "exif" if exif else "client",
                "created_at": created,
                "completed_at": created + timedelta(seconds=0.5),
                "verdict": "pending",
                "verdict_attempts": 0,
            }
        )
        state = classify_tilt(true_tilt, UPRIGHT_MAX_DEG, FALLEN_MIN_DEG).value
        seeded.append(SeededPhoto(photo_id, device_id, taken_at, true_tilt, state, sha))
        if len(readings) >= batch_size:
            flush()
    flush()
    for device_id, row in last.items():
        device = session.get(Device, device_id)
        assert device is not None
        if device.last_seq is None or row["seq"] > device.last_seq:
            device.last_seq = row["seq"]
            device.last_measured_at = row["measured_at"]
            device.last_received_at = row["received_at"]
            device.last_tilt_deg = row["tilt_deg"]
            device.last_state = row["state"]
            device.battery = row["battery"]
    session.commit()
    return Populated(user_id, zone_id, device_ids, seeded, total_readings)
