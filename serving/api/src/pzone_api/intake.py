"""Photo intake: create an upload, check what arrived, store the original once and its stripped derivatives.

Split in two: the API process does the cheap part (:func:`create_upload`, :func:`claim_upload`,
:func:`stage_upload`: rows, sizes, declared types, staging the bytes in the object store); the photo worker does
the CPU-heavy part (:func:`process_staged`), fed by the queue of :mod:`pzone_api.processing`.

Nothing is left half-stored: a rejected upload leaves no photo row and no object (objects this request created are
deleted again; originals that already existed — same bytes uploaded before — are kept).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pzone.db.models import Device, Photo, User, Zone
from pzone.storage import (
    LocalObjectStore,
    ObjectNotFound,
    ObjectTooLarge,
    S3ObjectStore,
    check_uploaded_object,
    content_addressed_key,
)
from pzone_api.images import BadImage, ImageInfo, inspect_and_derive, sha256_file
from pzone_api.settings import Settings
from pzone_api.verdicts import apply_verdict, classify

Store = LocalObjectStore | S3ObjectStore
ACCEPTED_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
DERIVATIVE_SIZES = {"preview": 1024, "thumb": 256}


class IntakeError(Exception):
    """A refused request: ``status`` is the HTTP status, ``code`` a stable machine code, ``reason`` for people."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


@dataclass(frozen=True)
class UploadTicket:
    photo: Photo
    url: str
    content_type: str
    max_bytes: int
    expires_at: datetime


def resolve_target(
    session: Session, device_id: str | None, zone_id: str | None
) -> tuple[str | None, str | None]:
    """The (device, zone) photographed: the device must exist; its zone is taken from it."""
    if device_id is None and zone_id is None:
        raise IntakeError(422, "no_target", "name the device_id (or zone_id) photographed")
    if device_id is not None:
        device = session.get(Device, device_id)
        if device is None:
            raise IntakeError(404, "unknown_device", f"no device {device_id!r}")
        if zone_id is not None and zone_id != device.zone_id:
            raise IntakeError(422, "zone_mismatch", f"device {device_id!r} is in zone {device.zone_id!r}")
        return device.id, device.zone_id
    if session.get(Zone, zone_id) is None:
        raise IntakeError(404, "unknown_zone", f"no zone {zone_id!r}")
    return None, zone_id


def check_declared(settings: Settings, content_type: str, size: int | None) -> None:
    if content_type not in ACCEPTED_TYPES:
        raise IntakeError(
            415, "unsupported_type", f"content type {content_type!r} is not one of {sorted(ACCEPTED_TYPES)}"
        )
    if size is not None and not 0 < size <= settings.upload_max_bytes:
        raise IntakeError(413, "too_large", f"size must be 1..{settings.upload_max_bytes} bytes, got {size}")


def create_upload(
    session: Session,
    store: Store,
    settings: Settings,
    user: User,
    *,
    device_id: str | None,
    zone_id: str | None,
    content_type: str,
    size: int | None,
    taken_at: datetime | None,
) -> UploadTicket:
    """Step 1 of the direct upload: a photo row awaiting its bytes and a presigned PUT URL for them."""
    check_declared(settings, content_type, size)
    device, zone = resolve_target(session, device_id, zone_id)
    photo_id = str(uuid.uuid4())
    max_bytes = size or settings.upload_max_bytes
    photo = Photo(
        id=photo_id,
        user_id=user.id,
        device_id=device,
        zone_id=zone,
        status="awaiting_upload",
        upload_key=f"uploads/{photo_id}",
        declared_content_type=content_type,
        client_taken_at=_aware(taken_at),
        verdict="pending",
        verdict_attempts=0,
        created_at=datetime.now(UTC),
    )
    session.add(photo)
    session.commit()
    expires_s = settings.upload_url_expires_s
    url = store.presign_put(photo.upload_key or "", content_type, max_bytes=max_bytes, expires_s=expires_s)
    return UploadTicket(photo, url, content_type, max_bytes, datetime.now(UTC) + timedelta(seconds=expires_s))


def claim_upload(session: Session, store: Store, settings: Settings, photo: Photo) -> bool:
    """Step 3, the API's part: the cheap checks of a direct upload, then the photo moves to "processing".

    Checked here (a HEAD request, no bytes read): the object exists, is not empty and within the size limit; a
    refusal removes the row and the object. Returns True when this request moved the photo (it must enqueue the
    job), False when a concurrent request did so first. Everything else is the worker's: :func:`process_staged`.
    """
    if photo.upload_key is None:
        raise IntakeError(409, "already_completed", "this photo was already completed")
    try:
        info = check_uploaded_object(store, photo.upload_key, max_bytes=settings.upload_max_bytes)
    except ObjectNotFound:
        raise IntakeError(409, "not_uploaded", "nothing was uploaded for this photo (yet)") from None
    except ObjectTooLarge:
        _discard(session, store, photo)
        raise IntakeError(413, "too_large", f"the upload exceeds {settings.upload_max_bytes} bytes") from None
    if info.size == 0:
        _discard(session, store, photo)
        raise IntakeError(422, "empty", "the upload is empty")
    claimed = session.execute(
        update(Photo)
        .where(Photo.id == photo.id, Photo.status == "awaiting_upload")
        .values(status="processing")
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(getattr(claimed, "rowcount", 0))


def stage_upload(
    session: Session,
    store: Store,
    settings: Settings,
    user: User,
    fileobj: IO[bytes],
    *,
    content_type: str,
    device_id: str | None,
    zone_id: str | None,
    taken_at: datetime | None,
) -> Photo:
    """The multipart path, the API's part: the body goes to the store's staging key in chunks (never held whole),
    and a photo row in status "processing" points at it; the worker then processes it like a direct upload."""
    check_declared(settings, content_type, None)
    device, zone = resolve_target(session, device_id, zone_id)
    photo_id = str(uuid.uuid4())
    upload_key = f"uploads/{photo_id}"
    try:
        size = store.put_stream(upload_key, fileobj, content_type, max_bytes=settings.upload_max_bytes)
    except ObjectTooLarge:
        raise IntakeError(413, "too_large", f"the upload exceeds {settings.upload_max_bytes} bytes") from None
    if size == 0:
        store.delete(upload_key)
        raise IntakeError(422, "empty", "the upload is empty")
    photo = Photo(
        id=photo_id,
        user_id=user.id,
        device_id=device,
        zone_id=zone,
        status="processing",
        upload_key=upload_key,
        declared_content_type=content_type,
        client_taken_at=_aware(taken_at),
        verdict="pending",
        verdict_attempts=0,
        created_at=datetime.now(UTC),
    )
    session.add(photo)
    try:
        session.commit()
    except BaseException:
        session.rollback()
        store.delete(upload_key)
        raise
    return photo


def process_staged(session: Session, store: Store, settings: Settings, photo: Photo) -> None:
    """The worker's part: full check, SHA-256, original, derivatives, verdict, commit; the upload object goes.

    A refusal (:class:`IntakeError`) removes the row and every object made for it before it is raised.
    A photo already stored (a job delivered twice) is left as it is.
    """
    if photo.status == "stored":
        return
    if photo.status != "processing" or photo.upload_key is None:
        raise IntakeError(409, "not_processing", f"photo in status {photo.status!r} cannot be processed")
    upload_key = photo.upload_key
    try:
        with _downloaded(store, upload_key) as path:
            _store_checked(
                session, store, settings, photo, path, photo.declared_content_type, source_key=upload_key
            )
    except ObjectNotFound:
        _discard(session, store, photo)
        raise IntakeError(409, "not_uploaded", "the uploaded object is gone") from None
    except IntakeError:
        _discard(session, store, photo)
        raise
    store.delete(upload_key)


def discard_photo(session: Session, store: Store, photo_id: str) -> None:
    """Remove a photo that could not be processed (its row and its upload object), if it is still there."""
    photo = session.get(Photo, photo_id)
    if photo is not None and photo.status != "stored":
        _discard(session, store, photo)


def _store_checked(
    session: Session,
    store: Store,
    settings: Settings,
    photo: Photo,
    path: Path,
    declared: str | None,
    *,
    source_key: str,
) -> None:
    """Inspect, store original and derivatives, ask for a verdict, commit. Cleans up its own objects on failure.

    ``source_key``: where the bytes are in the store (the staging key): the original is a store-side copy of it,
    so the photo's bytes are not uploaded a second time.
    """
    if path.stat().st_size == 0:
        raise IntakeError(422, "empty", "the upload is empty")
    try:
        info, derivatives = inspect_and_derive(
            path,
            declared_content_type=declared,
            max_pixels=settings.image_max_pixels,
            max_side=settings.image_max_side,
            sizes=DERIVATIVE_SIZES,
        )
    except BadImage as exc:
        raise IntakeError(422, exc.code, exc.reason) from None
    sha = sha256_file(path)
    created: list[str] = []
    try:
        original_key = content_addressed_key("originals", sha, ACCEPTED_TYPES[info.content_type])
        if store.head(original_key) is None:  # same bytes twice = one object
            store.copy(source_key, original_key, info.content_type)
            created.append(original_key)
        keys = {}
        for name, data in derivatives.items():
            key = content_addressed_key(f"derived/{name}", sha, "jpg")
            if store.head(key) is None:
                store.put_bytes(key, data, "image/jpeg")
                created.append(key)
            keys[name] = key
        _fill(photo, info, sha, original_key, keys, path.stat().st_size)
        apply_verdict(photo, (classify(settings, [derivatives["preview"]]) or [None])[0])
        session.commit()
    except BaseException:
        session.rollback()
        for key in created:
            store.delete(key)
        raise


def _fill(photo: Photo, info: ImageInfo, sha: str, original: str, keys: dict[str, str], size: int) -> None:
    now = datetime.now(UTC)
    photo.status = "stored"
    photo.upload_key = None
    photo.sha256 = sha
    photo.original_key = original
    photo.thumb_key = keys["thumb"]
    photo.preview_key = keys["preview"]
    photo.content_type = info.content_type
    photo.size_bytes = size
    photo.width, photo.height = info.width, info.height
    photo.completed_at = now
    if info.exif_taken_at is not None:
        photo.taken_at, photo.taken_at_source = info.exif_taken_at, "exif"
    elif photo.client_taken_at is not None:
        photo.taken_at, photo.taken_at_source = photo.client_taken_at, "client"
    else:
        photo.taken_at, photo.taken_at_source = now, "upload"


def _discard(session: Session, store: Store, photo: Photo) -> None:
    if photo.upload_key:
        store.delete(photo.upload_key)
    session.delete(photo)
    session.commit()


@contextmanager
def _downloaded(store: Store, key: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pzone-check-") as folder:
        path = Path(folder) / "object"
        with store.open(key) as source, path.open("wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
        yield path


def purge_stale_uploads(session: Session, store: Store, older_than: timedelta) -> int:
    """Remove photos whose upload never completed (and any bytes that did arrive); returns how many."""
    cutoff = datetime.now(UTC) - older_than
    stale = session.scalars(
        select(Photo).where(Photo.status == "awaiting_upload", Photo.created_at < cutoff)
    ).all()
    for photo in stale:
        if photo.upload_key:
            store.delete(photo.upload_key)
        session.delete(photo)
    session.commit()
    return len(stale)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
