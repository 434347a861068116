"""Photos: direct uploads to object storage, the multipart fallback, and each user's history."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Response, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from pzone.db.models import Photo, PhotoLabel
from pzone.labels import measured_of
from pzone.storage import ObjectStore
from pzone_api.api.deps import (
    CurrentSession,
    CurrentUser,
    DbDep,
    PhotoQueueDep,
    SettingsDep,
    StoreDep,
    require_csrf,
)
from pzone_api.api.errors import BAD_BODY, CSRF, INVALID_PHOTO, SIGNED_IN, Responses, refused
from pzone_api.api.fields import NO_NUL, ClientTime, IdInPath
from pzone_api.api.outages import RETRY_AFTER_S
from pzone_api.intake import (
    ACCEPTED_TYPES,
    NOT_AUTHENTICATED,
    BatchItemError,
    IntakeError,
    UploadRequest,
    UploadTicket,
    create_upload,
    create_uploads,
    stage_upload,
)
from pzone_api.processing import Completion, complete, complete_many, enqueue_and_wait

router = APIRouter(prefix="/api/photos", tags=["photos"], responses=SIGNED_IN)

NOT_FOUND = refused(404, "No such photo (another user's photos are not found either).")
# Refusals of a photo's target and declared type and size (create, and the multipart upload).
DECLARED_REFUSALS: Responses = (
    refused(404, "No such device (unknown_device) or zone (unknown_zone).")
    | refused(413, "Larger than PZONE_UPLOAD_MAX_BYTES (too_large).")
    | refused(415, "Not a JPEG, PNG or WebP (unsupported_type).")
    | INVALID_PHOTO
)
# Refusals of what was uploaded, as the photo worker checks it (complete, and the multipart upload).
UPLOAD_REFUSALS: Responses = (
    refused(
        409, "Nothing was uploaded (not_uploaded), or the photo was completed already (already_completed)."
    )
    | refused(413, "Larger than PZONE_UPLOAD_MAX_BYTES (too_large).")
    | refused(415, "Not a JPEG, PNG or WebP (unsupported_type).")
    | refused(
        503,
        "The photo could not be processed; upload it again (processing_failed). Or the photo store is away "
        "(store_unavailable): the photo is kept and processed once it is back.",
    )
    | INVALID_PHOTO
)


class PhotoCreate(BaseModel):
    device_id: str | None = Field(None, max_length=64, pattern=NO_NUL, description="The device photographed.")
    zone_id: str | None = Field(
        None, max_length=64, pattern=NO_NUL, description="Or only the zone, when the device is unknown."
    )
    content_type: str = Field(..., max_length=100, examples=["image/jpeg"])
    size: int = Field(
        ...,
        gt=0,
        description="Bytes the client will upload: the URL is for exactly this many (S3 signs the length).",
    )
    taken_at: ClientTime | None = Field(None, description="When the photo was taken, if the client knows.")


class UploadInstructions(BaseModel):
    url: str
    method: str = "PUT"
    headers: dict[str, str]
    max_bytes: int
    expires_at: datetime


class MeasuredOut(BaseModel):
    label: str = Field(description="upright, tilted or fallen (the sensor's or an operator's).")
    source: str = Field(description="sensor or manual (an operator's label wins).")
    quality: float | None = Field(description="0-1; 1 for an operator's label.")
    gap_s: float | None = Field(description="Seconds between the reading and the photo; null for manual.")


class PhotoOut(BaseModel):
    id: str
    status: str
    device_id: str | None
    zone_id: str | None
    created_at: datetime
    taken_at: datetime | None
    taken_at_source: str | None
    width: int | None
    height: int | None
    size_bytes: int | None
    sha256: str | None
    verdict: str
    verdict_probs: dict[str, float] | None
    model_version: str | None
    thumb_url: str | None
    preview_url: str | None
    # Filled by the training circle's sensor labels ("predicted vs measured").
    measured_state: str | None = None
    measured: MeasuredOut | None = None


class PhotoCreated(BaseModel):
    photo: PhotoOut
    upload: UploadInstructions


# Batches (several photos picked at once): one create and one complete for all of them. The model bounds what is
# parsed; PZONE_UPLOAD_BATCH_MAX (at most this) is the limit enforced.
BATCH_PARSE_MAX = 100


class PhotoBatchCreate(BaseModel):
    photos: list[PhotoCreate] = Field(
        ..., max_length=BATCH_PARSE_MAX, description="1..PZONE_UPLOAD_BATCH_MAX photos (default 20)."
    )


class PhotoBatchCreated(BaseModel):
    items: list[PhotoCreated] = Field(description="One per photo sent, in the same order.")


class PhotoBatchComplete(BaseModel):
    ids: list[Annotated[str, Field(max_length=64, pattern=NO_NUL)]] = Field(
        ..., max_length=BATCH_PARSE_MAX, description="The photos to complete, each once (1..the batch limit)."
    )


class ItemError(BaseModel):
    code: str
    reason: str


class PhotoCompletion(BaseModel):
    id: str
    status: int = Field(
        description="200 stored, 202 still processing (ask again), or the refusal's 4xx/503 as for one photo."
    )
    photo: PhotoOut | None = Field(None, description="The photo, when stored or still processing.")
    error: ItemError | None = Field(
        None, description="Why this photo was refused (its row and bytes are gone)."
    )


class PhotoBatchCompleted(BaseModel):
    items: list[PhotoCompletion] = Field(description="One per id sent, in the same order.")


class PhotoPage(BaseModel):
    items: list[PhotoOut]
    total: int
    page: int
    page_size: int


def _raise(exc: IntakeError) -> HTTPException:
    if exc.code == NOT_AUTHENTICATED:  # the same 401 as the auth dependencies' (plain-text detail)
        return HTTPException(exc.status, detail=exc.reason)
    detail: dict[str, Any] = {"code": exc.code, "reason": exc.reason}
    if isinstance(exc, BatchItemError):
        detail["index"] = exc.index
    # A 503 is a moment's trouble (the store away, a worker lost): say when to try again, as every 503 does.
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else None
    return HTTPException(exc.status, detail=detail, headers=headers)


def _created(ticket: UploadTicket, store: ObjectStore) -> PhotoCreated:
    upload = UploadInstructions(
        url=ticket.url,
        headers={"Content-Type": ticket.content_type},
        max_bytes=ticket.max_bytes,
        expires_at=ticket.expires_at,
    )
    return PhotoCreated(photo=photo_out(ticket.photo, store), upload=upload)


def photo_out(
    photo: Photo, store: ObjectStore, expires_s: int = 900, label: PhotoLabel | None = None
) -> PhotoOut:
    measured = measured_of(label)
    return PhotoOut(
        id=photo.id,
        status=photo.status,
        device_id=photo.device_id,
        zone_id=photo.zone_id,
        created_at=photo.created_at,
        taken_at=photo.taken_at,
        taken_at_source=photo.taken_at_source,
        width=photo.width,
        height=photo.height,
        size_bytes=photo.size_bytes,
        sha256=photo.sha256,
        verdict=photo.verdict,
        verdict_probs=json.loads(photo.verdict_probs) if photo.verdict_probs else None,
        model_version=photo.model_version,
        thumb_url=store.presign_get(photo.thumb_key, expires_s) if photo.thumb_key else None,
        preview_url=store.presign_get(photo.preview_key, expires_s) if photo.preview_key else None,
        measured_state=measured.label if measured else None,
        measured=MeasuredOut(**asdict(measured)) if measured else None,
    )


# The intake routes take the session (Redis or SQL) rather than CurrentUser: the user's "exists and is active" check
# is part of their first statement (one database round trip instead of two; 401 all the same).
@router.post(
    "", status_code=201, dependencies=[Depends(require_csrf)], responses=BAD_BODY | CSRF | DECLARED_REFUSALS
)
def create_photo(
    body: PhotoCreate, session: CurrentSession, db: DbDep, store: StoreDep, settings: SettingsDep
) -> PhotoCreated:
    """Start a direct upload: returns the photo id and a presigned PUT URL limited in time, type and size."""
    try:
        ticket = create_upload(
            db,
            store,
            settings,
            session.user_id,
            device_id=body.device_id,
            zone_id=body.zone_id,
            content_type=body.content_type,
            size=body.size,
            taken_at=body.taken_at,
        )
    except IntakeError as exc:
        raise _raise(exc) from None
    return _created(ticket, store)


@router.post(
    "/batch",
    status_code=201,
    dependencies=[Depends(require_csrf)],
    responses=BAD_BODY | CSRF | DECLARED_REFUSALS,  # a refusal names the photo (index)
)
def create_photos(
    body: PhotoBatchCreate, session: CurrentSession, db: DbDep, store: StoreDep, settings: SettingsDep
) -> PhotoBatchCreated:
    """Start direct uploads of several photos: all or none; a refusal names the photo (`index`)."""
    items = [
        UploadRequest(
            content_type=p.content_type,
            device_id=p.device_id,
            zone_id=p.zone_id,
            size=p.size,
            taken_at=p.taken_at,
        )
        for p in body.photos
    ]
    try:
        tickets = create_uploads(db, store, settings, session.user_id, items)
    except IntakeError as exc:
        raise _raise(exc) from None
    return PhotoBatchCreated(items=[_created(ticket, store) for ticket in tickets])


@router.post(
    "/batch/complete", dependencies=[Depends(require_csrf)], responses=BAD_BODY | CSRF | INVALID_PHOTO
)
async def complete_photos(
    body: PhotoBatchComplete,
    session: CurrentSession,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    queue: PhotoQueueDep,
) -> PhotoBatchCompleted:
    """Finish several direct uploads at once: each photo is answered on its own, as its single complete would be."""
    try:
        done = await complete_many(db, store, settings, queue, session.user_id, body.ids)
    except IntakeError as exc:
        raise _raise(exc) from None
    return await run_in_threadpool(_completed, done, store)  # presigning may refresh credentials (I/O)


def _completed(done: list[Completion], store: ObjectStore) -> PhotoBatchCompleted:
    items = []
    for item in done:
        if item.refusal is not None:
            error = ItemError(code=item.refusal.code, reason=item.refusal.reason)
            items.append(PhotoCompletion(id=item.photo_id, status=item.refusal.status, error=error))
        else:
            assert item.photo is not None
            status = 202 if item.photo.status == "processing" else 200
            items.append(PhotoCompletion(id=item.photo_id, status=status, photo=photo_out(item.photo, store)))
    return PhotoBatchCompleted(items=items)


PROCESSING_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "model": PhotoOut,
        "description": "Accepted, still processing (the worker did not answer in time): poll "
        "`GET /api/photos/{id}`, or `POST /api/photos/{id}/complete` again to wait for the outcome.",
    }
}


@router.post(
    "/upload",
    status_code=201,
    dependencies=[Depends(require_csrf)],
    responses=PROCESSING_RESPONSES | BAD_BODY | CSRF | DECLARED_REFUSALS | UPLOAD_REFUSALS,
    # the file part's types (others are refused with 415), which FastAPI cannot declare
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {"encoding": {"file": {"contentType": ", ".join(ACCEPTED_TYPES)}}}
            }
        }
    },
)
async def upload_photo(
    response: Response,
    session: CurrentSession,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    queue: PhotoQueueDep,
    file: Annotated[UploadFile, File(description="The photo (JPEG, PNG or WebP).")],
    device_id: Annotated[str | None, Form(max_length=64, pattern=NO_NUL)] = None,
    zone_id: Annotated[str | None, Form(max_length=64, pattern=NO_NUL)] = None,
    taken_at: Annotated[ClientTime | None, Form()] = None,
) -> PhotoOut:
    """Upload in one multipart request (simple clients): streamed to the store, then checked like a direct upload."""
    try:
        staged = await run_in_threadpool(
            stage_upload,
            db,
            store,
            settings,
            session.user_id,
            file.file,
            content_type=file.content_type or "application/octet-stream",
            device_id=device_id,
            zone_id=zone_id,
            taken_at=taken_at,
        )
        photo = await enqueue_and_wait(db, settings, queue, staged.id)
    except IntakeError as exc:
        raise _raise(exc) from None
    if photo.status == "processing":
        response.status_code = 202
    return await run_in_threadpool(photo_out, photo, store)


@router.post(
    "/{photo_id}/complete",
    dependencies=[Depends(require_csrf)],
    responses=PROCESSING_RESPONSES | CSRF | NOT_FOUND | UPLOAD_REFUSALS,
)
async def complete_photo(
    photo_id: IdInPath,
    response: Response,
    session: CurrentSession,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    queue: PhotoQueueDep,
) -> PhotoOut:
    """Finish a direct upload: the object is checked, stored once, thumbnailed and classified by the photo worker.

    The database work runs in the threadpool and the wait for the worker on the event loop: uploads waiting on a
    slow worker hold no thread, so they never hold up other requests.
    """
    try:
        photo = await complete(db, store, settings, queue, session.user_id, photo_id)
    except IntakeError as exc:
        raise _raise(exc) from None
    if photo.status == "processing":
        response.status_code = 202
    return await run_in_threadpool(photo_out, photo, store)


# Bounds the OFFSET, which PostgreSQL holds in a bigint (a larger one is a DataError, a 500, not an empty page).
PAGE_MAX = 1_000_000


@router.get("")
def list_photos(
    user: CurrentUser,
    db: DbDep,
    store: StoreDep,
    page: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PhotoPage:
    """The signed-in user's photos, newest first."""
    where = (Photo.user_id == user.id, Photo.status == "stored")
    total = db.scalar(select(func.count()).select_from(Photo).where(*where)) or 0
    photos = db.scalars(
        select(Photo)
        .where(*where)
        .order_by(Photo.created_at.desc(), Photo.id)
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    labels = {
        row.photo_id: row
        for row in db.scalars(select(PhotoLabel).where(PhotoLabel.photo_id.in_([p.id for p in photos])))
    }
    items = [photo_out(p, store, label=labels.get(p.id)) for p in photos]
    return PhotoPage(items=items, total=total, page=page, page_size=page_size)


@router.get("/{photo_id}", responses=NOT_FOUND)
def get_photo(photo_id: IdInPath, user: CurrentUser, db: DbDep, store: StoreDep) -> PhotoOut:
    """One of the signed-in user's photos (another user's id is a 404)."""
    photo = db.get(Photo, photo_id)
    if photo is None or photo.user_id != user.id:
        raise HTTPException(404, detail={"code": "not_found", "reason": "no such photo"})
    return photo_out(photo, store, label=db.get(PhotoLabel, photo.id))
