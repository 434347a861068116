"""Labels from telemetry: each stored photo gets the tilt class its device measured when the photo was taken.

The decision is pure (:func:`label_for`); :func:`refresh_labels` feeds it from the database in batches and upserts
``photo_labels``. A reading's time is its device timestamp when that lies within ``max_clock_skew_s`` of the server's
``received_at``, else ``received_at``: a device whose clock is an hour off still matches by server time, and a reading
buffered offline for a while (within the tolerance) keeps its true time. The readings within ``window_s`` of the
photo's ``taken_at`` must agree (one class, angles within ``max_spread_deg``) or there is no label, only a reason.
An operator's label (:func:`set_manual_label`) wins over the sensor's and survives every refresh.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pzone.db.models import Photo, PhotoLabel, SensorReading, table_of, utcnow
from pzone.tilt import FALLEN_MIN_DEG, TILT_CLASSES, UPRIGHT_MAX_DEG, classify_tilt

SOURCE_SENSOR = "sensor"
SOURCE_MANUAL = "manual"

REASON_OK = "ok"
REASON_NO_DEVICE = "no_device"
REASON_NO_TAKEN_AT = "no_taken_at"
REASON_NO_READING = "no_reading_in_window"
REASON_TOO_FEW = "too_few_readings"  # fewer than min_readings in the window (min_readings > 1)
REASON_DISAGREE = "readings_disagree"  # classes differ, or the angle spread exceeds max_spread_deg
REASON_NOT_COMPUTED = "not_computed"  # a row made by a manual label before the sensor's first pass

# quality = weighted mean of three scores in [0, 1]: closeness in time (1 at the photo's instant, 0 at the window's
# edge), agreement (1 when the window's angles are equal, 0 at max_spread_deg) and margin (the nearest reading's
# distance from the nearest class threshold, 1 from half the tilted band on).
QUALITY_WEIGHTS = {"gap": 0.4, "agreement": 0.3, "margin": 0.3}
MANUAL_QUALITY = 1.0  # an operator's label is trusted

BATCH_SIZE = 500  # photos per query: readings for a batch are one statement of (device, time range) terms


# --- parameters -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelParams:
    """How photos are matched with readings; the pipeline passes the ``labels:`` section of params.yaml."""

    window_s: float = 30.0  # a reading within this many seconds of taken_at counts
    max_clock_skew_s: float = 300.0  # device_ts further than this from received_at is not trusted
    max_spread_deg: float = 10.0  # angles in the window further apart than this: the object was moving
    upright_max_deg: float = UPRIGHT_MAX_DEG  # upright below
    fallen_min_deg: float = FALLEN_MIN_DEG  # fallen from; tilted between
    min_readings: int = 1  # readings the window must hold

    def __post_init__(self) -> None:
        for name in ("window_s", "max_clock_skew_s", "max_spread_deg", "upright_max_deg", "fallen_min_deg"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"labels.{name} must be a finite number, got {value!r}")
        if self.window_s <= 0:
            raise ValueError(f"labels.window_s must be > 0 seconds, got {self.window_s!r}")
        if self.max_clock_skew_s < 0:
            raise ValueError(f"labels.max_clock_skew_s must be >= 0 seconds, got {self.max_clock_skew_s!r}")
        if self.max_spread_deg < 0:
            raise ValueError(f"labels.max_spread_deg must be >= 0 degrees, got {self.max_spread_deg!r}")
        if not 0 < self.upright_max_deg < self.fallen_min_deg <= 180:
            raise ValueError(
                "labels thresholds must satisfy 0 < upright_max_deg < fallen_min_deg <= 180, got "
                f"upright_max_deg={self.upright_max_deg!r}, fallen_min_deg={self.fallen_min_deg!r}"
            )
        if (
            isinstance(self.min_readings, bool)
            or not isinstance(self.min_readings, int)
            or self.min_readings < 1
        ):
            raise ValueError(f"labels.min_readings must be an integer >= 1, got {self.min_readings!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> LabelParams:
        """Validated parameters from a mapping (missing keys keep their defaults; unknown keys are an error)."""
        if not isinstance(values, Mapping):
            raise ValueError(f"labels parameters must be a mapping, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise ValueError(
                f"unknown labels parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        converted: dict[str, Any] = {}
        for key, value in values.items():
            if key != "min_readings" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if key == "min_readings" and isinstance(value, float) and value.is_integer():
                value = int(value)
            converted[str(key)] = value
        return cls(**converted)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the parameters (stored with each label)."""
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# --- the pure decision ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadingPoint:
    """What a label needs of one sensor reading."""

    reading_id: int
    tilt_deg: float
    received_at: datetime  # server time
    device_ts: datetime | None = None  # device clock, missing when not synced


@dataclass(frozen=True, slots=True)
class LabelDecision:
    """The sensor's label of one photo (``label`` null: ``reason`` says why) and its evidence."""

    label: str | None
    reason: str
    reading_id: int | None = None  # the reading nearest in time within the window
    gap_s: float | None = None  # its distance from taken_at
    readings_in_window: int = 0
    angle_deg: float | None = None  # its tilt
    quality: float | None = None  # in [0, 1]; only with a label


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime (SQLite hands back naive ones, which are UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def reading_time(point: ReadingPoint, max_clock_skew_s: float) -> datetime:
    """The device's time when within ``max_clock_skew_s`` of the server's, else the server's (UTC)."""
    received = as_utc(point.received_at)
    if point.device_ts is None:
        return received
    device = as_utc(point.device_ts)
    return device if abs((device - received).total_seconds()) <= max_clock_skew_s else received


def label_for(
    photo_taken_at: datetime | None, readings: Sequence[ReadingPoint], params: LabelParams
) -> LabelDecision:
    """The label of a photo taken at ``photo_taken_at`` from its device's readings (any; those outside the window
    are ignored)."""
    if photo_taken_at is None:
        return LabelDecision(None, REASON_NO_TAKEN_AT)
    taken = as_utc(photo_taken_at)
    in_window: list[tuple[float, int, ReadingPoint]] = []
    for point in readings:
        gap = abs((reading_time(point, params.max_clock_skew_s) - taken).total_seconds())
        if gap <= params.window_s:
            in_window.append((gap, point.reading_id, point))
    if not in_window:
        return LabelDecision(None, REASON_NO_READING)
    in_window.sort(key=lambda item: (item[0], item[1]))
    gap, _, nearest = in_window[0]
    evidence: dict[str, Any] = {
        "reading_id": nearest.reading_id,
        "gap_s": gap,
        "readings_in_window": len(in_window),
        "angle_deg": nearest.tilt_deg,
    }
    if len(in_window) < params.min_readings:
        return LabelDecision(None, REASON_TOO_FEW, **evidence)
    angles = [point.tilt_deg for _, _, point in in_window]
    classes = {classify_tilt(angle, params.upright_max_deg, params.fallen_min_deg) for angle in angles}
    spread = max(angles) - min(angles)
    if len(classes) > 1 or spread > params.max_spread_deg:
        return LabelDecision(None, REASON_DISAGREE, **evidence)
    quality = label_quality(gap, spread, nearest.tilt_deg, params)
    return LabelDecision(classes.pop().value, REASON_OK, quality=quality, **evidence)


def label_quality(gap_s: float, spread_deg: float, angle_deg: float, params: LabelParams) -> float:
    """See :data:`QUALITY_WEIGHTS`; rounded to 4 decimals."""
    gap_score = 1.0 - min(1.0, gap_s / params.window_s)
    agreement = 1.0 - min(1.0, spread_deg / params.max_spread_deg) if params.max_spread_deg > 0 else 1.0
    half_band = (params.fallen_min_deg - params.upright_max_deg) / 2
    distance = min(abs(angle_deg - params.upright_max_deg), abs(angle_deg - params.fallen_min_deg))
    margin = min(1.0, distance / half_band)
    weights = QUALITY_WEIGHTS
    quality = weights["gap"] * gap_score + weights["agreement"] * agreement + weights["margin"] * margin
    return round(max(0.0, min(1.0, quality)), 4)


# --- rows -------------------------------------------------------------------------------------------------------------


class LabelRow(Protocol):
    """What :func:`effective_label` reads (a :class:`~pzone.db.models.PhotoLabel`, or a result row)."""

    @property
    def label(self) -> str | None: ...

    @property
    def manual_label(self) -> str | None: ...


def effective_label(row: LabelRow | None) -> str | None:
    """The operator's label when set, else the sensor's (null: none)."""
    if row is None:
        return None
    return row.manual_label if row.manual_label is not None else row.label


@dataclass(frozen=True, slots=True)
class Measured:
    """The label the history page shows next to the model's verdict ("predicted vs measured")."""

    label: str
    source: str  # sensor or manual
    quality: float | None
    gap_s: float | None


def measured_of(row: PhotoLabel | None) -> Measured | None:
    """The effective label with its source, quality and gap; ``None`` when there is none."""
    if row is None:
        return None
    if row.manual_label is not None:
        return Measured(row.manual_label, SOURCE_MANUAL, MANUAL_QUALITY, None)
    if row.label is not None:
        return Measured(row.label, SOURCE_SENSOR, row.quality, row.gap_s)
    return None


# --- refresh ----------------------------------------------------------------------------------------------------------


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


def _insert_for(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT with ``on_conflict_do_update`` (PostgreSQL and SQLite)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"photo labels support PostgreSQL and SQLite, not {name}")


def _photo_batches(
    session: Session, photo_ids: Iterable[str] | None, batch_size: int
) -> Iterator[Sequence[Any]]:
    """Stored photos (id, device_id, taken_at) in batches of neighbours: by device, then time, so that a batch's
    readings are a few contiguous ranges and each reading is fetched about once. The keys are read first (one query,
    or one per ``batch_size`` ids given): three small columns, even for a million photos."""
    columns = select(Photo.id, Photo.device_id, Photo.taken_at).where(Photo.status == "stored")
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
    return label_for(taken, points[low:high], params)


def refresh_labels(
    session: Session,
    params: LabelParams,
    *,
    photo_ids: Iterable[str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> LabelStats:
    """Compute the sensor's label of every stored photo (or of ``photo_ids``) and upsert it; manual labels stay.

    One query for the photos' keys, then per batch of ``batch_size`` photos one for their readings and one upsert.
    Not committed.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    table = table_of(PhotoLabel)
    insert = _insert_for(session)
    digest = params.digest
    photos = manual = 0
    labels: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for batch in _photo_batches(session, photo_ids, batch_size):
        readings = _readings_by_device(session, batch, params)
        now = utcnow()
        rows = []
        for photo in batch:
            decision = _decide(photo, readings, params)
            reasons[decision.reason] += 1
            rows.append(
                {
                    "photo_id": photo.id,
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


# --- manual labels ----------------------------------------------------------------------------------------------------


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
        insert = _insert_for(session)
        statement = insert(table).values(
            photo_id=photo_id, label=None, reason=REASON_NOT_COMPUTED, readings_in_window=0, **manual
        )
        session.execute(statement.on_conflict_do_update(index_elements=[table.c.photo_id], set_=manual))
    return session.get(PhotoLabel, photo_id, populate_existing=True)


# --- the training set -------------------------------------------------------------------------------------------------


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
