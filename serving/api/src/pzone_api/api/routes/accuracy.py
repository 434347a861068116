"""Live accuracy: every model version's predictions scored against the measured labels, over time (operators)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from pzone.accuracy import accuracy_report, bucket_start
from pzone_api.api.deps import DbDep, require_operator
from pzone_api.api.errors import OPERATOR
from pzone_api.api.fields import NO_NUL

router = APIRouter(
    prefix="/api/accuracy", tags=["accuracy"], dependencies=[Depends(require_operator)], responses=OPERATOR
)

MAX_WINDOW = timedelta(days=366)
MAX_POINTS = 1000  # buckets per version: window / bucket
DURATION = re.compile(r"^\s*([0-9]{1,7})\s*([mhd]?)\s*$")
UNITS = {"": "minutes", "m": "minutes", "h": "hours", "d": "days"}


class AccuracyPoint(BaseModel):
    t: datetime = Field(description="Start of the bucket (UTC).")
    accuracy: float
    macro_f1: float
    n: int = Field(description="Scored predictions in the bucket.")


class VersionOut(BaseModel):
    model_version: str
    scored: int = Field(description="Predictions in the window whose photo has a measured label.")
    pending_label: int = Field(description="Predictions in the window still waiting for a label.")
    accuracy: float | None = Field(description="Over every scored prediction in the window; null when none.")
    macro_f1: float | None = Field(description="Mean F1 of the classes that occur (measured or predicted).")
    first_predicted_at: datetime
    last_predicted_at: datetime
    points: list[AccuracyPoint] = Field(
        description="Buckets with at least min_count scored predictions, oldest first."
    )


class AccuracyOut(BaseModel):
    since: datetime
    until: datetime
    bucket_s: int
    versions: list[VersionOut] = Field(description="Model versions by their first prediction in the window.")
    pending_label: int = Field(
        description="Predictions in the window (all versions) still waiting for a label."
    )


def _duration(name: str, text: str) -> timedelta:
    """``90``, ``90m``, ``6h`` or ``7d`` (a bare number is minutes); a 422 naming the parameter otherwise."""
    match = DURATION.match(text)
    value = timedelta(**{UNITS[match.group(2)]: int(match.group(1))}) if match else None
    if value is None or value <= timedelta(0):
        _invalid(name, text, "must be a positive duration such as 90m, 6h or 7d (a bare number is minutes)")
    assert value is not None
    return value


def _invalid(name: str, value: object, message: str) -> None:
    # The shape of FastAPI's own 422 answers, so that clients (and the UI) read it the same way.
    raise RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": f"{name} {message}", "input": value}]
    )


@router.get("", responses={422: {"description": "A bad window, bucket or min_count."}})
def live_accuracy(
    db: DbDep,
    window: Annotated[str, Query(description="How far back from now: 90m, 6h, 7d (at most 366d).")] = "24h",
    bucket: Annotated[str, Query(description="Width of each point's time bucket: 5m, 1h, 1d.")] = "1h",
    min_count: Annotated[
        int, Query(ge=1, le=100_000, description="Buckets with fewer scored predictions are left out.")
    ] = 1,
    model_version: Annotated[
        str | None, Query(max_length=100, pattern=NO_NUL, description="Only this version.")
    ] = None,
) -> AccuracyOut:
    """Accuracy and macro-F1 per model version over the window, with one point per time bucket."""
    span, width = _duration("window", window), _duration("bucket", bucket)
    if span > MAX_WINDOW:
        _invalid("window", window, f"must be at most {MAX_WINDOW.days}d")
    if width > span:
        _invalid("bucket", bucket, "must not be longer than the window")
    if span / width > MAX_POINTS:
        _invalid("bucket", bucket, f"is too small for this window: at most {MAX_POINTS} buckets")
    until = datetime.now(UTC)
    # From the start of the bucket holding (now - window): the first point covers a whole bucket.
    since = bucket_start(until - span, width)
    report = accuracy_report(db, since=since, model_version=model_version, bucket=width, min_count=min_count)
    return AccuracyOut(
        since=since,
        until=until,
        bucket_s=int(width.total_seconds()),
        pending_label=report.pending_label,
        versions=[
            VersionOut(
                model_version=v.model_version,
                scored=v.scored,
                pending_label=v.pending_label,
                accuracy=v.accuracy,
                macro_f1=v.macro_f1,
                first_predicted_at=v.first_predicted_at,
                last_predicted_at=v.last_predicted_at,
                points=[
                    AccuracyPoint(t=p.t, accuracy=p.accuracy, macro_f1=p.macro_f1, n=p.n) for p in v.points
                ],
            )
            for v in report.versions
        ],
    )
