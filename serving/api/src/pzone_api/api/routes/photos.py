"""Photos: direct uploads to object storage, the multipart fallback, and each user's history."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from pzone.db.models import Photo
from pzone_api.api.deps import CurrentUser, DbDep, SettingsDep, StoreDep, require_csrf
from pzone_api.intake import (
    IntakeError,
    Store,
    complete_upload,
    create_upload,
    purge_stale_uploads,
    store_streamed_upload,
)

router = APIRouter(prefix="/api/photos", tags=["photos"])


class PhotoCreate(BaseModel):
    device_id: str | None = Field(None, max_length=64, description="The device photographed.")
    zone_id: str | None = Field(
        None, max_length=64, description="Or only the zone, when the device is unknown."
    )
    content_type: str = Field(..., max_length=100, examples=["image/jpeg"])
    size: int | None = Field(None, gt=0, description="Bytes the client will upload; caps the URL.")
    taken_at: datetime | None = Field(None, description="When the photo was taken, if the client knows.")


class UploadInstructions(BaseModel):
    url: str
    method: str = "PUT"
    headers: dict[str, str]
    max_bytes: int
    expires_at: datetime


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


class PhotoCreated(BaseModel):
    photo: PhotoOut
    upload: UploadInstructions


class PhotoPage(BaseModel):
    items: list[PhotoOut]
    total: int
    page: int
    page_size: int


def _raise(exc: IntakeError) -> HTTPException:
    return HTTPException(exc.status, detail={"code": exc.code, "reason": exc.reason})


def photo_out(photo: Photo, store: Store, expires_s: int = 900) -> PhotoOut:
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
    )


@router.post("", status_code=201, dependencies=[Depends(require_csrf)])
def create_photo(
    body: PhotoCreate, user: CurrentUser, db: DbDep, store: StoreDep, settings: SettingsDep
) -> PhotoCreated:
    """Start a direct upload: returns the photo id and a presigned PUT URL limited in time, type and size."""
    purge_stale_uploads(db, store, timedelta(seconds=settings.upload_url_expires_s * 2))
    try:
        ticket = create_upload(
            db,
            store,
            settings,
            user,
            device_id=body.device_id,
            zone_id=body.zone_id,
            content_type=body.content_type,
            size=body.size,
            taken_at=body.taken_at,
        )
    except IntakeError as exc:
        raise _raise(exc) from None
    upload = UploadInstructions(
        url=ticket.url,
        headers={"Content-Type": ticket.content_type},
        max_bytes=ticket.max_bytes,
        expires_at=ticket.expires_at,
    )
    return PhotoCreated(photo=photo_out(ticket.photo, store), upload=upload)


@router.post("/upload", status_code=201, dependencies=[Depends(require_csrf)])
def upload_photo(
    user: CurrentUser,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The photo (JPEG, PNG or WebP).")],
    device_id: Annotated[str | None, Form(max_length=64)] = None,
    zone_id: Annotated[str | None, Form(max_length=64)] = None,
    taken_at: Annotated[datetime | None, Form()] = None,
) -> PhotoOut:
    """Upload in one multipart request (simple clients); streamed to storage, checked like a direct upload."""
    try:
        photo = store_streamed_upload(
            db,
            store,
            settings,
            user,
            file.file,
            content_type=file.content_type or "application/octet-stream",
            device_id=device_id,
            zone_id=zone_id,
            taken_at=taken_at,
        )
    except IntakeError as exc:
        raise _raise(exc) from None
    return photo_out(photo, store)


@router.post("/{photo_id}/complete", dependencies=[Depends(require_csrf)])
def complete_photo(
    photo_id: str, user: CurrentUser, db: DbDep, store: StoreDep, settings: SettingsDep
) -> PhotoOut:
    """Finish a direct upload: check the object, store it once, make thumbnails and ask for a verdict."""
    try:
        photo = complete_upload(db, store, settings, user, photo_id)
    except IntakeError as exc:
        raise _raise(exc) from None
    return photo_out(photo, store)


@router.get("")
def list_photos(
    user: CurrentUser,
    db: DbDep,
    store: StoreDep,
    page: Annotated[int, Query(ge=1)] = 1,
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
    return PhotoPage(items=[photo_out(p, store) for p in photos], total=total, page=page, page_size=page_size)


@router.get("/{photo_id}")
def get_photo(photo_id: str, user: CurrentUser, db: DbDep, store: StoreDep) -> PhotoOut:
    """One of the signed-in user's photos (another user's id is a 404)."""
    photo = db.get(Photo, photo_id)
    if photo is None or photo.user_id != user.id:
        raise HTTPException(404, detail={"code": "not_found", "reason": "no such photo"})
    return photo_out(photo, store)
