"""The operator's label of a photo: set or cleared, it wins over the sensor's and survives every refresh.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pzone.db.models import Photo, PhotoLabel, table_of, utcnow
from pzone.labels.decision import REASON_NOT_COMPUTED
from pzone.labels.rows import SOURCE_MANUAL, SOURCE_SENSOR, upsert_insert
from pzone.tilt import TILT_CLASSES


def set_manual_label(
    session: Session, photo_id: str, label: str | None, by_user_id: str | None, *, now: datetime | None = None
) -> PhotoLabel | None:
    """Set (or, with ``None``, clear) an operator's label of a stored photo; returns its row (``None`` when cleared
    and the sensor never labeled it). ``ValueError`` for an unknown label, ``LookupError`` for no stored photo.
    Not committed."""
    if label is not None and label not in TILT_CLASSES:
        raise ValueError(f"label must be one of {', '.join(TILT_CLASSES)} or null, got {label!r}")
    status = session.scalar(select(Photo.status).where(Photo.id == photo_id))
    if status != "stored":
        raise LookupError(f"no stored photo {photo_id!r}")
    table = table_of(PhotoLabel)
    if label is None:
        session.execute(
            update(table)
            .where(table.c.photo_id == photo_id)
            .values(manual_label=None, manual_by=None, manual_at=None, source=SOURCE_SENSOR)
        )
    else:
        manual = {
            "source": SOURCE_MANUAL,
            "manual_label": label,
            "manual_by": by_user_id,
            "manual_at": now or utcnow(),
        }
        insert = upsert_insert(session)
        statement = insert(table).values(
            photo_id=photo_id, label=None, reason=REASON_NOT_COMPUTED, readings_in_window=0, **manual
        )
        session.execute(statement.on_conflict_do_update(index_elements=[table.c.photo_id], set_=manual))
    return session.get(PhotoLabel, photo_id, populate_existing=True)
