"""The training set's source: stored photos with an effective label, as the snapshot stage fetches them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pzone.db.models import Photo, PhotoLabel
from pzone.labels.decision import as_utc
from pzone.labels.rows import MANUAL_QUALITY, SOURCE_MANUAL, SOURCE_SENSOR


@dataclass(frozen=True, slots=True)
class LabeledPhoto:
    """One photo of the training snapshot with its effective label."""

    photo_id: str
    sha256: str
    original_key: str
    content_type: str
    label: str
    source: str  # sensor or manual
    quality: float  # manual: MANUAL_QUALITY
    taken_at: datetime | None
    device_id: str | None


def labeled_photos(session: Session, *, min_quality: float = 0.0) -> list[LabeledPhoto]:
    """Stored photos with an effective label, by photo id (one query). Sensor labels below ``min_quality`` are left
    out; manual ones never are."""
    query = (
        select(
            Photo.id,
            Photo.sha256,
            Photo.original_key,
            Photo.content_type,
            Photo.taken_at,
            Photo.device_id,
            PhotoLabel.label,
            PhotoLabel.manual_label,
            PhotoLabel.quality,
        )
        .join(PhotoLabel, PhotoLabel.photo_id == Photo.id)
        .where(
            Photo.status == "stored",
            Photo.sha256.is_not(None),
            Photo.original_key.is_not(None),
            or_(PhotoLabel.manual_label.is_not(None), PhotoLabel.label.is_not(None)),
        )
        .order_by(Photo.id)
    )
    out: list[LabeledPhoto] = []
    for row in session.execute(query):
        if row.manual_label is not None:
            label, source, quality = row.manual_label, SOURCE_MANUAL, MANUAL_QUALITY
        else:
            label, source, quality = row.label, SOURCE_SENSOR, float(row.quality or 0.0)
            if quality < min_quality:
                continue
        out.append(
            LabeledPhoto(
                photo_id=row.id,
                sha256=row.sha256,
                original_key=row.original_key,
                content_type=row.content_type or "application/octet-stream",
                label=label,
                source=source,
                quality=quality,
                taken_at=as_utc(row.taken_at) if row.taken_at is not None else None,
                device_id=row.device_id,
            )
        )
    return out
