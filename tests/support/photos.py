"""Photos through the API in tests: a test JPEG, a device to attach it to, the upload flow as a browser runs it,
and what the database and the object store hold afterwards."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.orm import Session

from pzone.db.engine import make_engine
from pzone.db.models import Photo, User
from pzone.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from pzone.telemetry import Limits
from pzone_ingest.batch import process_batch
from pzone_ingest.messages import from_iot_event
from tests.support.api import TEST_REDIS_URL, make_app

PHOTO_BUCKET = "pzone-photos"  # the S3 bucket of the photo tests' API on moto


# A declared size that the tests' photos stay under, where a test does not care about it: the local store's URL takes
# up to it (S3's would take exactly it, but moto checks no signature).
ANY_SIZE = 10**6


def add_device(database_url: str, device_id: str = "dev-1", zone_id: str = "zone-1") -> None:
    """Devices come from telemetry: register one the way ingest does."""
    event = {
        "v": 1,
        "seq": 1,
        "ax": 0.0,
        "ay": 0.0,
        "az": 1.0,
        "zone_id": zone_id,
        "topic_device_id": device_id,
    }
    engine = make_engine(database_url)
    process_batch(engine, [from_iot_event(event)], Limits(), source="lambda")
    engine.dispose()


def photo_bytes(
    size: tuple[int, int] = (640, 480), *, orientation: int | None = None, gps: bool = False
) -> bytes:
    """A JPEG with a red block in its top-left corner, optionally with EXIF orientation and GPS tags."""
    image = Image.new("RGB", size, (30, 120, 200))
    image.paste((255, 0, 0), (0, 0, size[0] // 4, size[1] // 4))
    exif = Image.Exif()
    exif[0x0110] = "pzone test camera"
    if orientation:
        exif[0x0112] = orientation
    if gps:
        exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 18.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def object_keys(store: ObjectStore) -> set[str]:
    """Every key in the store (the local store's own dot-files aside)."""
    if isinstance(store, LocalObjectStore):
        return {
            p.relative_to(store.root).as_posix()
            for p in store.root.rglob("*")
            if p.is_file() and not p.relative_to(store.root).as_posix().startswith(".")
        }
    assert isinstance(store, S3ObjectStore)
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def put_upload(
    client: TestClient, upload: dict[str, Any], data: bytes, content_type: str | None = None
) -> int:
    """PUT the bytes where the API said, as a browser would: to S3 directly, or to the local signed URL."""
    headers = {"Content-Type": content_type or upload["headers"]["Content-Type"]}
    if upload["url"].startswith("/"):
        return client.put(upload["url"], content=data, headers=headers).status_code
    request = urllib.request.Request(upload["url"], data=data, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def fetch(client: TestClient, url: str) -> bytes:
    """The bytes behind a URL the API handed out: its own route, or a signed S3 URL."""
    if url.startswith("/"):
        response = client.get(url)
        assert response.status_code == 200
        return response.content
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def direct_upload(
    client: TestClient, csrf: str, data: bytes, content_type: str = "image/jpeg", **body: Any
) -> Any:
    """Create, PUT and complete one photo the direct way; returns the complete's response."""
    created = client.post(
        "/api/photos",
        json={"device_id": "dev-1", "content_type": content_type, "size": len(data), **body},
        headers={"X-CSRF-Token": csrf},
    )
    assert created.status_code == 201, created.text
    ticket = created.json()
    assert put_upload(client, ticket["upload"], data) in (200, 204)
    return client.post(f"/api/photos/{ticket['photo']['id']}/complete", headers={"X-CSRF-Token": csrf})


def deactivate_users(database_url: str) -> None:
    """Mark every account inactive."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            session.execute(update(User).values(is_active=False))
            session.commit()
    finally:
        engine.dispose()


def photo_count(database_url: str) -> int:
    """How many photo rows there are, in any status."""
    engine = create_engine(database_url)
    with Session(engine) as session:
        count = session.scalar(select(func.count()).select_from(Photo)) or 0
    engine.dispose()
    return count


def queued_app(queued: dict[str, Any], **settings: Any) -> Any:
    """An API on the ``queued`` fixture's queue and Redis prefix."""
    return make_app(
        queued["db"],
        Path(queued["env"]["PZONE_DATA_DIR"]),
        TEST_REDIS_URL,
        redis_key_prefix=queued["prefix"],
        processing_queue_name=queued["queue_name"],
        **settings,
    )


def worker_env(queued: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in queued["env"].items() if v}  # empty ones would be invalid settings


def statuses(db_url: str) -> dict[str, str]:
    """Each photo's status, by id."""
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return {row.id: row.status for row in session.execute(select(Photo.id, Photo.status))}
    finally:
        engine.dispose()
