"""The sensor's labels of stored photos: every photo's :func:`~pzone.labels.decision.label_for`, fed from the
database in batches — computed (:func:`sensor_labels`, which only reads) and upserted into ``photo_labels``
(:func:`refresh_labels`, which writes the sensor's columns and never the operator's). Nothing here commits."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from pzone.db.models import Photo, PhotoLabel, SensorReading, table_of, utcnow
from pzone.labels.decision import (
    REASON_NO_DEVICE,
    REASON_NO_TAKEN_AT,
    REASON_TIME_UNPROVEN,
    UNPROVEN_TIME_QUALITY,
    LabelDecision,
    LabelParams,
    ReadingPoint,
    as_utc,
    label_for,
    reading_time,
    time_is_proven,
)
from pzone.labels.rows import SOURCE_SENSOR, effective_label, upsert_insert

BATCH_SIZE = 500  # photos per query: readings for a batch are one statement of (device, time range) terms


@dataclass(frozen=True)
class LabelStats:
    """What one :func:`refresh_labels` did. ``labels`` counts effective labels (manual ones win)."""

    photos: int = 0
    labeled: int = 0  # photos with an effective label
    unlabeled: int = 0
    manual: int = 0  # of which set by an operator
    labels: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # the sensor's reasons (ok included)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Columns a refresh rewrites; source and the manual_* columns are the operator's.
_SENSOR_COLUMNS = (
    "label",
    "reason",
    "reading_id",
    "gap_s",
    "readings_in_window",
    "angle_deg",
    "quality",
    "computed_at",
    "params_hash",
)


def _photo_batches(
    session: Session, photo_ids: Iterable[str] | None, batch_size: int
) -> Iterator[Sequence[Any]]:
    """Stored photos (id, device_id, taken_at, who set it, when the upload began) in batches of neighbours: by
    device, then time, so that a batch's readings are a few contiguous ranges and each reading is fetched about once.
    The keys are read first (one query, or one per ``batch_size`` ids given): five small columns, even for a million
    photos."""
    columns = select(
        Photo.id, Photo.device_id, Photo.taken_at, Photo.taken_at_source, Photo.created_at
    ).where(Photo.status == "stored")
    rows: list[Any] = []
    if photo_ids is None:
        rows.extend(session.execute(columns))
    else:
        ids = sorted(set(photo_ids))
        for start in range(0, len(ids), batch_size):
            rows.extend(session.execute(columns.where(Photo.id.in_(ids[start : start + batch_size]))))
    never = datetime.min.replace(tzinfo=UTC)
    rows.sort(
        key=lambda row: (
            row.device_id is None,
            row.device_id or "",
            as_utc(row.taken_at) if row.taken_at is not None else never,
            row.id,
        )
    )
    for start in range(0, len(rows), batch_size):
        yield rows[start : start + batch_size]


def _merged(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    ranges.sort()
    out: list[tuple[datetime, datetime]] = []
    for low, high in ranges:
        if out and low <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _readings_by_device(
    session: Session, photos: Sequence[Any], params: LabelParams
) -> dict[str, tuple[list[datetime], list[ReadingPoint]]]:
    """One statement for the batch: each device's readings received near its photos, sorted by reading time.

    A reading's time is its device_ts only within max_clock_skew_s of received_at, so every candidate was received
    within window_s + max_clock_skew_s of a photo: that range, per device, on (device_id, received_at).
    """
    reach = timedelta(seconds=params.window_s + params.max_clock_skew_s)
    ranges: dict[str, list[tuple[datetime, datetime]]] = {}
    for photo in photos:
        if photo.device_id is not None and photo.taken_at is not None:
            taken = as_utc(photo.taken_at)
            ranges.setdefault(photo.device_id, []).append((taken - reach, taken + reach))
    terms: list[ColumnElement[bool]] = [
        and_(SensorReading.device_id == device, SensorReading.received_at.between(low, high))
        for device in sorted(ranges)
        for low, high in _merged(ranges[device])
    ]
    if not terms:
        return {}
    query = select(
        SensorReading.id,
        SensorReading.device_id,
        SensorReading.tilt_deg,
        SensorReading.received_at,
        SensorReading.device_ts,
    ).where(or_(*terms))
    timed: dict[str, list[tuple[datetime, int, ReadingPoint]]] = {}
    for row in session.execute(query):
        device_ts = as_utc(row.device_ts) if row.device_ts is not None else None
        point = ReadingPoint(row.id, row.tilt_deg, as_utc(row.received_at), device_ts)
        timed.setdefault(row.device_id, []).append(
            (reading_time(point, params.max_clock_skew_s), row.id, point)
        )
    out: dict[str, tuple[list[datetime], list[ReadingPoint]]] = {}
    for device, items in timed.items():
        items.sort(key=lambda item: (item[0], item[1]))
        out[device] = ([at for at, _, _ in items], [point for _, _, point in items])
    return out


def _decide(
    photo: Any, readings: Mapping[str, tuple[list[datetime], list[ReadingPoint]]], params: LabelParams
) -> LabelDecision:
    if photo.device_id is None:
        return LabelDecision(None, REASON_NO_DEVICE)
    if photo.taken_at is None:
        return LabelDecision(None, REASON_NO_TAKEN_AT)
    times, points = readings.get(photo.device_id, ([], []))
    taken = as_utc(photo.taken_at)
    window = timedelta(seconds=params.window_s)
    low = bisect.bisect_left(times, taken - window)
    high = bisect.bisect_right(times, taken + window)
    decision = label_for(taken, points[low:high], params)
    if decision.label is not None and not time_is_proven(
        photo.taken_at_source, taken, photo.created_at, params
    ):
        return replace(decision, reason=REASON_TIME_UNPROVEN, quality=UNPROVEN_TIME_QUALITY)
    return decision


@dataclass(frozen=True, slots=True)
class SensorLabel:
    """The sensor's decision for one stored photo."""

    photo_id: str
    decision: LabelDecision


def sensor_labels(
    session: Session,
    params: LabelParams,
    *,
    photo_ids: Iterable[str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[list[SensorLabel]]:
    """The sensor's label of every stored photo (or of ``photo_ids``), in batches of ``batch_size``; reads only.

    One query for the photos' keys, then per batch one for their readings.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    for batch in _photo_batches(session, photo_ids, batch_size):
        readings = _readings_by_device(session, batch, params)
        yield [SensorLabel(photo.id, _decide(photo, readings, params)) for photo in batch]


def refresh_labels(
    session: Session,
    params: LabelParams,
    *,
    photo_ids: Iterable[str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> LabelStats:
    """Upsert :func:`sensor_labels` into ``photo_labels``, one statement per batch; manual labels stay.
    Not committed."""
    table = table_of(PhotoLabel)
    insert = upsert_insert(session)
    digest = params.digest
    photos = manual = 0
    labels: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for batch in sensor_labels(session, params, photo_ids=photo_ids, batch_size=batch_size):
        now = utcnow()
        rows = []
        for item in batch:
            decision = item.decision
            reasons[decision.reason] += 1
            rows.append(
                {
                    "photo_id": item.photo_id,
                    "label": decision.label,
                    "source": SOURCE_SENSOR,
                    "reason": decision.reason,
                    "reading_id": decision.reading_id,
                    "gap_s": decision.gap_s,
                    "readings_in_window": decision.readings_in_window,
                    "angle_deg": decision.angle_deg,
                    "quality": decision.quality,
                    "computed_at": now,
                    "params_hash": digest,
                }
            )
        statement = insert(table).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.photo_id],
            set_={name: statement.excluded[name] for name in _SENSOR_COLUMNS},
        ).returning(table.c.label, table.c.manual_label)
        for row in session.execute(statement):
            photos += 1
            manual += row.manual_label is not None
            label = effective_label(row)
            if label is not None:
                labels[label] += 1
    _expire_loaded_labels(session)
    labeled = sum(labels.values())
    return LabelStats(
        photos=photos,
        labeled=labeled,
        unlabeled=photos - labeled,
        manual=manual,
        labels=dict(sorted(labels.items())),
        reasons=dict(sorted(reasons.items())),
    )


def _expire_loaded_labels(session: Session) -> None:
    """Label rows this session had loaded are stale after a Core statement changed them."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, PhotoLabel):
            session.expire(obj)
