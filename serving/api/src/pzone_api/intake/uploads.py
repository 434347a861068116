"""The API's part of the intake: a photo row per upload, its presigned PUT URL, the claim that hands it to the photo
worker, and the multipart body staged in the object store.

Every step here is cheap (rows, sizes, declared types, single statements in autocommit); the checks that decode
the image run in the photo worker (:mod:`pzone_api.intake.staged`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any, cast

from sqlalchemy import Connection, DateTime, String, Table, bindparam, insert, null, select, update
from sqlalchemy.orm import Session

from pzone.db.models import Device, Photo, User, Zone
from pzone.storage import ObjectStore, ObjectTooLarge
from pzone_api.settings import Settings

ACCEPTED_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


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


NOT_AUTHENTICATED = "not_authenticated"  # IntakeError code of a 401: the session's user is gone or inactive


def autocommit(session: Session) -> Connection:
    """The session's connection, in autocommit mode when the session has none yet.

    The API's intake statements are single statements (each atomic alone), so they need no BEGIN and COMMIT round
    trips; nor does a connection stay "idle in transaction" while a multipart body streams to the store.
    """
    if session.in_transaction():
        return session.connection()
    return session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


# The API's statements are built once, with bound parameters (p_*: names that no column has): building and
# cache-keying a statement per request costs more CPU than running it.
_USER, _DEVICE, _ZONE = (
    bindparam("p_user", type_=String),
    bindparam("p_device", type_=String),
    bindparam("p_zone", type_=String),
)
_TARGET_QUERIES = {
    "device": select(User.is_active, Device.id, Device.zone_id)
    .select_from(User)
    .outerjoin(Device, Device.id == _DEVICE)
    .where(User.id == _USER),
    "zone": select(User.is_active, null(), Zone.id)
    .select_from(User)
    .outerjoin(Zone, Zone.id == _ZONE)
    .where(User.id == _USER),
    "none": select(User.is_active, null(), null()).where(User.id == _USER),
}
_PHOTOS = cast(Table, Photo.__table__)
_INSERT_PHOTO = insert(_PHOTOS)
_CLAIM = (
    update(_PHOTOS)
    .where(
        Photo.id == bindparam("p_photo", type_=String),
        Photo.user_id == _USER,
        Photo.status == "awaiting_upload",
        select(User.id).where(User.id == _USER, User.is_active).exists(),
    )
    .values(status="processing", processing_at=bindparam("p_now", type_=DateTime(timezone=True)))
)


def check_target(
    conn: Connection, user_id: str, device_id: str | None, zone_id: str | None
) -> tuple[str | None, str | None]:
    """The session's user must exist and be active (401 otherwise, as for every signed-in request); the (device,
    zone) photographed: the device must exist, its zone is taken from it. One query for all of it."""
    kind = "device" if device_id is not None else "zone" if zone_id is not None else "none"
    params = {"p_user": user_id, "p_device": device_id, "p_zone": zone_id}
    row = conn.execute(_TARGET_QUERIES[kind], params).first()
    if row is None or not row[0]:
        raise IntakeError(401, NOT_AUTHENTICATED, "Session expired or invalid: log in again.")
    if device_id is None and zone_id is None:
        raise IntakeError(422, "no_target", "name the device_id (or zone_id) photographed")
    if device_id is not None:
        if row[1] is None:
            raise IntakeError(404, "unknown_device", f"no device {device_id!r}")
        if zone_id is not None and zone_id != row[2]:
            raise IntakeError(422, "zone_mismatch", f"device {device_id!r} is in zone {row[2]!r}")
        return device_id, row[2]
    if row[2] is None:
        raise IntakeError(404, "unknown_zone", f"no zone {zone_id!r}")
    return None, zone_id


def check_declared(settings: Settings, content_type: str, size: int | None) -> None:
    """The declared type, and the declared size (``None``: the multipart path, which counts the bytes itself)."""
    if content_type not in ACCEPTED_TYPES:
        raise IntakeError(
            415, "unsupported_type", f"content type {content_type!r} is not one of {sorted(ACCEPTED_TYPES)}"
        )
    if size is not None and not 0 < size <= settings.upload_max_bytes:
        raise IntakeError(413, "too_large", f"size must be 1..{settings.upload_max_bytes} bytes, got {size}")


def _new_photo(
    conn: Connection,
    user_id: str,
    target: tuple[str | None, str | None],
    status: str,
    content_type: str,
    taken_at: datetime | None,
    photo_id: str | None = None,
) -> Photo:
    """INSERT the photo row (one statement); returns the row as an unattached :class:`Photo`, for the answer."""
    columns = _photo_columns(user_id, target, status, content_type, taken_at, photo_id)
    conn.execute(_INSERT_PHOTO, columns)
    return Photo(**columns)


def _photo_columns(
    user_id: str,
    target: tuple[str | None, str | None],
    status: str,
    content_type: str,
    taken_at: datetime | None,
    photo_id: str | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A new photo row's columns."""
    photo_id = photo_id or str(uuid.uuid4())
    now = now or datetime.now(UTC)
    columns = {
        "id": photo_id,
        "user_id": user_id,
        "device_id": target[0],
        "zone_id": target[1],
        "status": status,
        "upload_key": f"uploads/{photo_id}",
        "declared_content_type": content_type,
        "client_taken_at": _aware(taken_at),
        "verdict": "pending",
        "verdict_attempts": 0,
        "created_at": now,
        "processing_at": now if status == "processing" else None,
    }
    return columns


def create_upload(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    user_id: str,
    *,
    device_id: str | None,
    zone_id: str | None,
    content_type: str,
    size: int,
    taken_at: datetime | None,
) -> UploadTicket:
    """Step 1 of the direct upload: a photo row awaiting its bytes and a presigned PUT URL for them, for exactly
    the ``size`` bytes declared (S3 signs the length: a PUT of any other length is refused before it stores).

    Two statements: the user and target check (:func:`check_target`) and the INSERT, in autocommit.
    """
    conn = autocommit(session)
    target = check_target(conn, user_id, device_id, zone_id)
    check_declared(settings, content_type, size)
    photo = _new_photo(conn, user_id, target, "awaiting_upload", content_type, taken_at)
    session.commit()
    expires_s = settings.upload_url_expires_s
    url = store.presign_put(
        photo.upload_key or "", content_type, max_bytes=size, expires_s=expires_s, exact=True
    )
    return UploadTicket(photo, url, content_type, size, datetime.now(UTC) + timedelta(seconds=expires_s))


@dataclass(frozen=True)
class UploadRequest:
    """One photo of a batch create (:func:`create_uploads`): what ``POST /api/photos`` takes for one."""

    content_type: str
    size: int
    device_id: str | None = None
    zone_id: str | None = None
    taken_at: datetime | None = None


class BatchItemError(IntakeError):
    """A refused batch: item ``index`` is why (nothing of the batch was created)."""

    def __init__(self, index: int, refusal: IntakeError) -> None:
        super().__init__(refusal.status, refusal.code, f"photos[{index}]: {refusal.reason}")
        self.index = index


def check_batch_size(settings: Settings, count: int) -> None:
    """A batch holds 1..``PZONE_UPLOAD_BATCH_MAX`` photos (422 otherwise)."""
    if count == 0:
        raise IntakeError(422, "empty_batch", "send at least one photo")
    if count > settings.upload_batch_max:
        raise IntakeError(
            422, "batch_too_large", f"at most {settings.upload_batch_max} photos per batch, got {count}"
        )


def create_uploads(
    session: Session, store: ObjectStore, settings: Settings, user_id: str, items: Sequence[UploadRequest]
) -> list[UploadTicket]:
    """Step 1 for several photos at once (``POST /api/photos/batch``): all of them or none.

    Every item is checked before anything is written (one target query per distinct device or zone, the user's
    check with the first); a refused item raises :class:`BatchItemError` naming it, and no row is created. The rows
    are one multi-row INSERT in one transaction; then one presigned PUT URL per photo.
    """
    check_batch_size(settings, len(items))
    conn = autocommit(session)
    targets: dict[tuple[str | None, str | None], tuple[str | None, str | None]] = {}
    checked: list[tuple[str | None, str | None]] = []
    for index, item in enumerate(items):
        key = (item.device_id, item.zone_id)
        try:
            if key not in targets:
                targets[key] = check_target(conn, user_id, item.device_id, item.zone_id)
            check_declared(settings, item.content_type, item.size)
        except IntakeError as exc:
            if exc.code == NOT_AUTHENTICATED:
                raise
            raise BatchItemError(index, exc) from None
        checked.append(targets[key])
    session.commit()  # ends the autocommit connection's use; the INSERT gets a transaction of its own
    now = datetime.now(UTC)
    rows = [
        _photo_columns(user_id, target, "awaiting_upload", item.content_type, item.taken_at, now=now)
        for item, target in zip(items, checked, strict=True)
    ]
    session.connection().execute(_INSERT_PHOTO, rows)
    session.commit()
    expires_s = settings.upload_url_expires_s
    expires_at = now + timedelta(seconds=expires_s)
    tickets = []
    for item, columns in zip(items, rows, strict=True):
        url = store.presign_put(
            columns["upload_key"], item.content_type, max_bytes=item.size, expires_s=expires_s, exact=True
        )
        tickets.append(UploadTicket(Photo(**columns), url, item.content_type, item.size, expires_at))
    return tickets


_CLAIM_MANY = (
    update(_PHOTOS)
    .where(
        Photo.id.in_(bindparam("p_photos", expanding=True)),
        Photo.user_id == _USER,
        Photo.status == "awaiting_upload",
        select(User.id).where(User.id == _USER, User.is_active).exists(),
    )
    .values(status="processing", processing_at=bindparam("p_now", type_=DateTime(timezone=True)))
    .returning(Photo.id)
)


def claim_uploads(session: Session, user_id: str, photo_ids: Sequence[str]) -> set[str]:
    """:func:`claim_upload` for several photos in one guarded UPDATE; returns the ids this request moved."""
    if not photo_ids:
        return set()
    claimed = autocommit(session).execute(
        _CLAIM_MANY, {"p_photos": list(photo_ids), "p_user": user_id, "p_now": datetime.now(UTC)}
    )
    moved = {str(row[0]) for row in claimed}
    session.commit()
    return moved


def claim_upload(session: Session, user_id: str, photo_id: str) -> bool:
    """Step 3, the API's part: the photo moves from "awaiting_upload" to "processing", in one guarded UPDATE that
    also checks that it is this user's, and that the user is active.

    Nothing is read from the store here: the worker checks that the object exists and its size before it reads a
    byte (:func:`process_staged` with ``direct=True``), and hands back "not uploaded" if it does not. Returns True
    when this request moved the photo (it must enqueue the job); False otherwise (user inactive, photo unknown,
    another user's, claimed by a concurrent request, stored or refused): the caller finds out which.
    """
    claimed = autocommit(session).execute(
        _CLAIM, {"p_photo": photo_id, "p_user": user_id, "p_now": datetime.now(UTC)}
    )
    session.commit()
    return bool(getattr(claimed, "rowcount", 0))


def stage_upload(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    user_id: str,
    fileobj: IO[bytes],
    *,
    content_type: str,
    device_id: str | None,
    zone_id: str | None,
    taken_at: datetime | None,
) -> Photo:
    """The multipart path, the API's part: the body goes to the store's staging key in chunks (never held whole),
    and a photo row in status "processing" points at it; the worker then processes it like a direct upload."""
    conn = autocommit(session)
    target = check_target(conn, user_id, device_id, zone_id)
    check_declared(settings, content_type, None)
    photo_id = str(uuid.uuid4())
    upload_key = f"uploads/{photo_id}"
    try:
        size = store.put_stream(upload_key, fileobj, content_type, max_bytes=settings.upload_max_bytes)
    except ObjectTooLarge:
        raise IntakeError(413, "too_large", f"the upload exceeds {settings.upload_max_bytes} bytes") from None
    if size == 0:
        store.delete(upload_key)
        raise IntakeError(422, "empty", "the upload is empty")
    try:
        photo = _new_photo(conn, user_id, target, "processing", content_type, taken_at, photo_id)
        session.commit()
    except BaseException:
        session.rollback()
        store.delete(upload_key)
        raise
    return photo


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
