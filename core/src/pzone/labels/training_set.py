"""The training set's source: stored photos with an effective label, as the snapshot stage fetches them — the
sensor's labels as stored by the last refresh, or computed now from the readings without writing anything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pzone.db.models import Photo, PhotoLabel
from pzone.labels.decision import LabelParams, as_utc
from pzone.labels.refresh import sensor_labels
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


def labeled_photos(
    session: Session, *, min_quality: float = 0.0, params: LabelParams | None = None
) -> list[LabeledPhoto]:
    """Stored photos with an effective label (the operator's over the sensor's), by photo id. Sensor labels below
    ``min_quality`` are left out; manual ones never are.

    Without ``params`` the sensor's labels are the stored ones (as the last :func:`~pzone.labels.refresh_labels`
    left them; one query). With ``params`` they are computed now by :func:`~pzone.labels.refresh.sensor_labels`,
    the refresh's own computation, and nothing is written: the same list a refresh with ``params`` followed by a
    call without them would give, from a read-only connection.
    """
    computed: dict[str, tuple[str | None, float | None]] | None = None
    if params is not None:
        computed = {
            item.photo_id: (item.decision.label, item.decision.quality)
            for batch in sensor_labels(session, params)
            for item in batch
            if item.decision.label is not None
        }
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
        .join(PhotoLabel, PhotoLabel.photo_id == Photo.id, isouter=computed is not None)
        .where(Photo.status == "stored", Photo.sha256.is_not(None), Photo.original_key.is_not(None))
        .order_by(Photo.id)
    )
    if computed is None:
        query = query.where(or_(PhotoLabel.manual_label.is_not(None), PhotoLabel.label.is_not(None)))
    out: list[LabeledPhoto] = []
    for row in session.execute(query):
        sensor_label, sensor_quality = (
            (row.label, row.quality) if computed is None else computed.get(row.id, (None, None))
        )
        if row.manual_label is not None:
            label, source, quality = row.manual_label, SOURCE_MANUAL, MANUAL_QUALITY
        elif sensor_label is not None:
            label, source, quality = sensor_label, SOURCE_SENSOR, float(sensor_quality or 0.0)
            if quality < min_quality:
                continue
        else:
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
