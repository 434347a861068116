"""The pure label decision: which tilt class a photo's device measured when the photo was taken, and how sure.

A reading's time is its device timestamp when that lies within ``max_clock_skew_s`` of the server's ``received_at``,
else ``received_at``: a device whose clock is an hour off still matches by server time, and a reading buffered
offline for a while (within the tolerance) keeps its true time. The readings within ``window_s`` of the photo's
``taken_at`` must agree (one class, angles within ``max_spread_deg``) or there is no label, only a reason.
No I/O here: :mod:`pzone.labels.refresh` feeds :func:`label_for` from the database.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from pzone.tilt import FALLEN_MIN_DEG, UPRIGHT_MAX_DEG, classify_tilt

REASON_OK = "ok"
REASON_NO_DEVICE = "no_device"
REASON_NO_TAKEN_AT = "no_taken_at"
REASON_NO_READING = "no_reading_in_window"
REASON_TOO_FEW = "too_few_readings"  # fewer than min_readings in the window (min_readings > 1)
REASON_DISAGREE = "readings_disagree"  # classes differ, or the angle spread exceeds max_spread_deg
REASON_NOT_COMPUTED = "not_computed"  # a row made by a manual label before the sensor's first pass
# A label from readings at a moment the client chose, further from the upload than client_time_trusted_s: kept for the
# operator to see, with UNPROVEN_TIME_QUALITY, which any snapshot.min_quality above 0 leaves out of training.
REASON_TIME_UNPROVEN = "client_time_unproven"

# Who set a photo's taken_at (photos.taken_at_source). "client" (the create request's taken_at) and "exif" (the file
# it uploaded) are the client's to choose, and so could borrow any past reading's label; "upload" (the server's clock)
# and "import" (an operator's CSV) are not.
CLIENT_CHOSEN_TIME_SOURCES = frozenset({"client", "exif"})
UNPROVEN_TIME_QUALITY = 0.0
# How far after the upload began a client's clock may put a photo (clocks differ): later is not a time it was taken.
CLIENT_TIME_FUTURE_TOLERANCE_S = 120.0

# quality = weighted mean of three scores in [0, 1]: closeness in time (1 at the photo's instant, 0 at the window's
# edge), agreement (1 when the window's angles are equal, 0 at max_spread_deg) and margin (the nearest reading's
# distance from the nearest class threshold, 1 from half the tilted band on).
QUALITY_WEIGHTS = {"gap": 0.4, "agreement": 0.3, "margin": 0.3}


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
    client_time_trusted_s: float = 600.0  # a client-chosen taken_at counts this long before the upload began

    def __post_init__(self) -> None:
        for name in (
            "window_s",
            "max_clock_skew_s",
            "max_spread_deg",
            "upright_max_deg",
            "fallen_min_deg",
            "client_time_trusted_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"labels.{name} must be a finite number, got {value!r}")
        if self.window_s <= 0:
            raise ValueError(f"labels.window_s must be > 0 seconds, got {self.window_s!r}")
        if self.max_clock_skew_s < 0:
            raise ValueError(f"labels.max_clock_skew_s must be >= 0 seconds, got {self.max_clock_skew_s!r}")
        if self.client_time_trusted_s < 0:
            raise ValueError(
                f"labels.client_time_trusted_s must be >= 0 seconds, got {self.client_time_trusted_s!r}"
            )
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


# --- the decision -----------------------------------------------------------------------------------------------------


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


def time_is_proven(
    source: str | None, taken_at: datetime, uploaded_at: datetime | None, params: LabelParams
) -> bool:
    """Whether a photo's ``taken_at`` may pick its sensor label: set by the server or an operator, or chosen by the
    client no earlier than ``params.client_time_trusted_s`` before the upload began (and not after it, beyond
    clock differences). The client can then only pick among the last moments' readings, which the photo shows."""
    if source not in CLIENT_CHOSEN_TIME_SOURCES:
        return True
    if uploaded_at is None:
        return False
    lead_s = (as_utc(uploaded_at) - as_utc(taken_at)).total_seconds()
    return -CLIENT_TIME_FUTURE_TOLERANCE_S <= lead_s <= params.client_time_trusted_s


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
