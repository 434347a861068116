"""Photo labels: the state the device's tilt sensor measured when a photo was taken, and operators' corrections."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from pzone.db.models import Photo, PhotoLabel
from pzone.labels import REASON_NOT_COMPUTED, SOURCE_MANUAL, SOURCE_SENSOR, effective_label, set_manual_label
from pzone.tilt import TILT_CLASSES
from pzone_api.api.deps import CsrfChecked, CurrentUser, DbDep, OperatorUser
from pzone_api.api.errors import BAD_BODY, CSRF_OPERATOR, SIGNED_IN, refused
from pzone_api.api.fields import IdInPath

router = APIRouter(prefix="/api/photos", tags=["labels"], responses=SIGNED_IN)
NOT_FOUND = refused(404, "No such stored photo, or not one of yours (operators see every photo).")

# A Literal of the tilt classes, not the TiltState enum: the schema stays an inline string enum and a wrong label
# answers 422 literal_error. mypy cannot read a Literal built at run time, so it checks a str.
if TYPE_CHECKING:
    LabelName = str
else:
    LabelName = Literal[TILT_CLASSES]


class LabelIn(BaseModel):
    label: LabelName | None = Field(
        ..., description="The operator's label; null clears it (the sensor's counts)."
    )


class LabelOut(BaseModel):
    photo_id: str
    label: str | None = Field(description="The effective label: the operator's when set, else the sensor's.")
    source: str | None = Field(description="manual or sensor; null when there is no label.")
    sensor_label: str | None
    reason: str = Field(description="ok, or why the sensor gave no label (no_reading_in_window, …).")
    reading_id: int | None
    gap_s: float | None
    readings_in_window: int
    angle_deg: float | None
    quality: float | None
    manual_label: str | None
    manual_by: str | None
    manual_at: datetime | None
    computed_at: datetime | None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def label_out(photo_id: str, row: PhotoLabel | None) -> LabelOut:
    if row is None:
        return LabelOut(
            photo_id=photo_id,
            label=None,
            source=None,
            sensor_label=None,
            reason=REASON_NOT_COMPUTED,
            reading_id=None,
            gap_s=None,
            readings_in_window=0,
            angle_deg=None,
            quality=None,
            manual_label=None,
            manual_by=None,
            manual_at=None,
            computed_at=None,
        )
    label = effective_label(row)
    source = None if label is None else (SOURCE_MANUAL if row.manual_label is not None else SOURCE_SENSOR)
    return LabelOut(
        photo_id=photo_id,
        label=label,
        source=source,
        sensor_label=row.label,
        reason=row.reason,
        reading_id=row.reading_id,
        gap_s=row.gap_s,
        readings_in_window=row.readings_in_window,
        angle_deg=row.angle_deg,
        quality=row.quality,
        manual_label=row.manual_label,
        manual_by=row.manual_by,
        manual_at=_utc(row.manual_at),
        computed_at=_utc(row.computed_at),
    )


def _not_found() -> HTTPException:
    return HTTPException(404, detail={"code": "not_found", "reason": "no such photo"})


@router.get("/{photo_id}/label", responses=NOT_FOUND)
def get_label(photo_id: IdInPath, user: CurrentUser, db: DbDep) -> LabelOut:
    """A photo's measured label and its evidence (its owner or an operator; others get a 404)."""
    photo = db.get(Photo, photo_id)
    if photo is None or photo.status != "stored" or (photo.user_id != user.id and user.role != "operator"):
        raise _not_found()
    return label_out(photo_id, db.get(PhotoLabel, photo_id))


@router.put("/{photo_id}/label", dependencies=[CsrfChecked], responses=BAD_BODY | CSRF_OPERATOR | NOT_FOUND)
def put_label(photo_id: IdInPath, body: LabelIn, user: OperatorUser, db: DbDep) -> LabelOut:
    """Set an operator's label of a photo (it wins over the sensor's), or clear it with null (operators only)."""
    try:
        row = set_manual_label(db, photo_id, body.label, user.id)
    except LookupError:
        raise _not_found() from None
    db.commit()
    return label_out(photo_id, row)
