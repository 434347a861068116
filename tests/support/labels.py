"""Rows for the labelling tests: devices, readings and photos written straight to the database, and one scene with a
photo of every case the labelling must tell apart."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from pzone.db.models import Device, Photo, SensorReading, Zone, table_of
from pzone.telemetry import derive_angles
from tests.support.api import create_user_in_db

T = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # the scene's photos are taken at T
PASSWORD = "correct horse battery"


def at(seconds: float) -> datetime:
    """``seconds`` after T."""
    return T + timedelta(seconds=seconds)


def add_device_row(session: Session, device_id: str, zone_id: str = "zone-1") -> None:
    """A device (and its zone, when new) as rows, without any telemetry."""
    if session.get(Zone, zone_id) is None:
        session.add(Zone(id=zone_id))
        session.flush()
    session.add(Device(id=device_id, zone_id=zone_id))
    session.flush()


def reading_row(
    device_id: str,
    seq: int,
    tilt: float,
    received: datetime,
    device_ts: datetime | None,
    zone_id: str = "zone-1",
) -> dict[str, Any]:
    rad = math.radians(tilt)
    ax, ay, az = math.sin(rad), 0.0, math.cos(rad)
    angles = derive_angles(ax, ay, az)
    return {
        "device_id": device_id,
        "zone_id": zone_id,
        "seq": seq,
        "device_ts": device_ts,
        "received_at": received,
        "measured_at": device_ts or received,
        "ax": ax,
        "ay": ay,
        "az": az,
        "battery": 90.0,
        "tilt_deg": tilt,
        "pitch_deg": angles.pitch_deg,
        "roll_deg": angles.roll_deg,
        "state": "upright",
    }


def add_readings(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    session.execute(insert(table_of(SensorReading)), rows)
    keys = [(r["device_id"], r["seq"]) for r in rows]
    found = {
        (row.device_id, row.seq): row.id
        for row in session.execute(select(SensorReading.id, SensorReading.device_id, SensorReading.seq))
    }
    return [found[key] for key in keys]


def photo_row(
    user_id: str, device_id: str | None, taken_at: datetime | None, status: str = "stored"
) -> dict[str, Any]:
    photo_id = str(uuid.uuid4())
    return {
        "id": photo_id,
        "user_id": user_id,
        "device_id": device_id,
        "status": status,
        "sha256": photo_id.replace("-", "").ljust(64, "0"),
        "original_key": f"originals/{photo_id[:2]}/{photo_id}.jpg",
        "content_type": "image/jpeg",
        "taken_at": taken_at,
        "verdict": "pending",
        "verdict_attempts": 0,
        "created_at": T,
    }


def add_photo(
    session: Session, user_id: str, device_id: str | None, taken_at: datetime | None, **kw: Any
) -> str:
    row = photo_row(user_id, device_id, taken_at, **kw)
    session.execute(insert(table_of(Photo)), [row])
    return str(row["id"])


def label_scene(engine: Engine, db_url: str) -> dict[str, Any]:
    """Photos of every case the labelling must tell apart, with their devices' readings, owned by ana@example.com
    (password ``PASSWORD``); returns the owner's id, the photos' ids by case and the readings' ids."""
    user = create_user_in_db(db_url, "ana@example.com", PASSWORD)
    with Session(engine, expire_on_commit=False) as s:
        for device in ("d-exact", "d-quiet", "d-moving", "d-skewed", "d-buffered", "d-noclock"):
            add_device_row(s, device)
        ids = add_readings(
            s,
            [
                reading_row("d-exact", 1, 3.0, at(0.2), at(0.0)),
                reading_row("d-exact", 2, 4.0, at(-20), at(-20)),
                reading_row("d-quiet", 1, 3.0, at(-600), at(-600)),
                reading_row("d-moving", 1, 15.0, at(-4), at(-4)),
                reading_row("d-moving", 2, 45.0, at(3), at(3)),
                reading_row("d-skewed", 1, 85.0, at(5), at(3600 + 5)),  # device clock an hour ahead
                reading_row("d-buffered", 1, 45.0, at(250), at(1)),  # sent 250 s late, sane clock
                reading_row("d-noclock", 1, 70.0, at(-6), None),
            ],
        )
        photos = {
            "exact": add_photo(s, user, "d-exact", T),
            "quiet": add_photo(s, user, "d-quiet", T),
            "moving": add_photo(s, user, "d-moving", T),
            "skewed": add_photo(s, user, "d-skewed", T),
            "buffered": add_photo(s, user, "d-buffered", T),
            "noclock": add_photo(s, user, "d-noclock", T),
            "no_device": add_photo(s, user, None, T),
            "no_taken_at": add_photo(s, user, "d-exact", None),
            "awaiting": add_photo(s, user, "d-exact", T, status="awaiting_upload"),
        }
        s.commit()
    return {"user": user, "photos": photos, "readings": ids}
