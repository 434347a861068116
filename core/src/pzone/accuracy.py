"""Live accuracy: the model tier's predictions scored against what the sensors (or operators) measured.

Every verdict is a ``predictions`` row (photo, model version, label, time). Once its photo has an effective label
(:func:`pzone.labels.effective_label`: the operator's, else the sensor's) the prediction is *scored*; until then it is
*pending a label* and counts nowhere else. Per model version: accuracy and macro-F1 over everything scored, and over
time as points, either time buckets (:func:`bucketed`) or a rolling window of the last N scored predictions
(:func:`rolling`).

Macro-F1 averages the per-class F1 of the classes that occur (measured or predicted) in the scored set, as
scikit-learn does; a class measured but never predicted scores 0 and pulls it down. (The training report averages
all three classes, which is the same number whenever all three occur.)

The scoring is pure; the database side is one query (:func:`load_predictions`: predictions ⟕ photo_labels). Nothing
here writes. :func:`live_accuracy` is what the API, ``pzone retrain`` and ``pzone demo`` read.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pzone.db.models import PhotoLabel, Prediction
from pzone.labels import as_utc
from pzone.tilt import TILT_CLASSES

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- scoring ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassScore:
    precision: float  # 0 when the class was never predicted
    recall: float  # 0 when the class was never measured
    f1: float
    support: int  # scored predictions whose measured label is this class
    predicted: int  # scored predictions of this class


@dataclass(frozen=True, slots=True)
class Scores:
    """Scores of a set of (measured, predicted) pairs; ``accuracy`` and ``macro_f1`` are ``None`` for an empty set."""

    n: int
    correct: int
    accuracy: float | None
    macro_f1: float | None
    per_class: dict[str, ClassScore] = field(default_factory=dict)


def _class_order(name: str) -> tuple[int, str]:
    return (TILT_CLASSES.index(name), "") if name in TILT_CLASSES else (len(TILT_CLASSES), name)


def scores_of(confusion: Mapping[tuple[str, str], int]) -> Scores:
    """Scores from confusion counts keyed by ``(measured, predicted)``."""
    n = sum(confusion.values())
    if n == 0:
        return Scores(0, 0, None, None)
    support: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for (measured, guess), count in confusion.items():
        support[measured] += count
        predicted[guess] += count
        if measured == guess:
            correct[measured] += count
    per_class: dict[str, ClassScore] = {}
    for name in sorted(set(support) | set(predicted), key=_class_order):
        precision = correct[name] / predicted[name] if predicted[name] else 0.0
        recall = correct[name] / support[name] if support[name] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = ClassScore(precision, recall, f1, support[name], predicted[name])
    hits = sum(correct.values())
    macro = sum(s.f1 for s in per_class.values()) / len(per_class)
    return Scores(n, hits, hits / n, macro, per_class)


def score(pairs: Iterable[tuple[str, str]]) -> Scores:
    """Scores of ``(measured, predicted)`` pairs."""
    return scores_of(Counter(pairs))


@dataclass(frozen=True, slots=True)
class PredictionRow:
    """One prediction as the scoring sees it; ``measured`` is the photo's effective label (``None``: pending)."""

    model_version: str
    predicted: str
    measured: str | None
    predicted_at: datetime  # UTC


@dataclass(frozen=True, slots=True)
class Point:
    """Scores of the predictions made in one time bucket (``t``: its start), or of a rolling window (``t``: the time
    of its newest prediction)."""

    t: datetime
    accuracy: float
    macro_f1: float
    n: int


def bucket_start(moment: datetime, bucket: timedelta) -> datetime:
    """The start of the bucket holding ``moment``; buckets are aligned to the Unix epoch, so they stay put as time
    goes on."""
    return EPOCH + bucket * ((as_utc(moment) - EPOCH) // bucket)


def bucketed(rows: Iterable[PredictionRow], *, bucket: timedelta, min_count: int = 1) -> list[Point]:
    """One point per bucket of ``predicted_at`` holding at least ``min_count`` scored predictions, oldest first.

    Pending rows are skipped; pass one model version's rows (versions are not told apart here).
    """
    if bucket <= timedelta(0):
        raise ValueError(f"bucket must be positive, got {bucket!r}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count!r}")
    buckets: dict[datetime, Counter[tuple[str, str]]] = {}
    for row in rows:
        if row.measured is not None:
            start = bucket_start(row.predicted_at, bucket)
            buckets.setdefault(start, Counter())[(row.measured, row.predicted)] += 1
    points = []
    for start in sorted(buckets):
        scores = scores_of(buckets[start])
        if scores.n >= min_count and scores.accuracy is not None and scores.macro_f1 is not None:
            points.append(Point(start, scores.accuracy, scores.macro_f1, scores.n))
    return points


def rolling(rows: Iterable[PredictionRow], *, last: int, min_count: int | None = None) -> list[Point]:
    """After each scored prediction (by ``predicted_at``), the scores of the last ``last`` scored ones; points with
    fewer than ``min_count`` (default ``last``) behind them are left out. Pass one model version's rows."""
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last!r}")
    need = last if min_count is None else min_count
    if not 1 <= need <= last:
        raise ValueError(f"min_count must be within 1..{last}, got {min_count!r}")
    scored = sorted((r for r in rows if r.measured is not None), key=lambda r: r.predicted_at)
    window: deque[tuple[str, str]] = deque()
    confusion: Counter[tuple[str, str]] = Counter()
    points = []
    for row in scored:
        pair = (row.measured or "", row.predicted)
        window.append(pair)
        confusion[pair] += 1
        if len(window) > last:
            confusion[window.popleft()] -= 1
        if len(window) >= need:
            scores = scores_of(+confusion)  # unary plus drops the zero counts
            assert scores.accuracy is not None and scores.macro_f1 is not None
            points.append(Point(as_utc(row.predicted_at), scores.accuracy, scores.macro_f1, scores.n))
    return points


# --- per model version --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionAccuracy:
    model_version: str
    scored: int
    pending_label: int
    accuracy: float | None  # None: nothing scored yet
    macro_f1: float | None
    per_class: dict[str, ClassScore]
    first_predicted_at: datetime
    last_predicted_at: datetime
    points: list[Point]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "scored": self.scored,
            "pending_label": self.pending_label,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": {
                name: {
                    "precision": s.precision,
                    "recall": s.recall,
                    "f1": s.f1,
                    "support": s.support,
                    "predicted": s.predicted,
                }
                for name, s in self.per_class.items()
            },
            "first_predicted_at": self.first_predicted_at.isoformat(),
            "last_predicted_at": self.last_predicted_at.isoformat(),
            "points": [
                {"t": p.t.isoformat(), "accuracy": p.accuracy, "macro_f1": p.macro_f1, "n": p.n}
                for p in self.points
            ],
        }


@dataclass(frozen=True)
class AccuracyReport:
    """Every model version seen (oldest first prediction first) and the predictions still waiting for a label."""

    versions: list[VersionAccuracy]
    pending_label: int
    since: datetime | None = None

    @property
    def scored(self) -> int:
        return sum(v.scored for v in self.versions)

    def version(self, model_version: str) -> VersionAccuracy | None:
        return next((v for v in self.versions if v.model_version == model_version), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since is not None else None,
            "scored": self.scored,
            "pending_label": self.pending_label,
            "versions": [v.as_dict() for v in self.versions],
        }


def summarize(
    rows: Iterable[PredictionRow],
    *,
    bucket: timedelta | None = None,
    min_count: int = 1,
    since: datetime | None = None,
) -> AccuracyReport:
    """Scores per model version; with ``bucket``, points per time bucket (see :func:`bucketed`), else none."""
    by_version: dict[str, list[PredictionRow]] = {}
    for row in rows:
        by_version.setdefault(row.model_version, []).append(row)
    versions = []
    for name, items in by_version.items():
        scores = score(pairs_of(items))
        times = [as_utc(r.predicted_at) for r in items]
        versions.append(
            VersionAccuracy(
                model_version=name,
                scored=scores.n,
                pending_label=len(items) - scores.n,
                accuracy=scores.accuracy,
                macro_f1=scores.macro_f1,
                per_class=scores.per_class,
                first_predicted_at=min(times),
                last_predicted_at=max(times),
                points=bucketed(items, bucket=bucket, min_count=min_count) if bucket is not None else [],
            )
        )
    versions.sort(key=lambda v: (v.first_predicted_at, v.model_version))
    return AccuracyReport(versions, sum(v.pending_label for v in versions), since)


# --- the database -----------------------------------------------------------------------------------------------------


def load_predictions(
    session: Session, *, since: datetime | None = None, model_version: str | None = None
) -> list[PredictionRow]:
    """Predictions made at or after ``since`` (of one version, when given) with their photo's effective label, oldest
    first: one query, predictions LEFT JOIN photo_labels (a photo without a label row is pending)."""
    query = (
        select(
            Prediction.model_version,
            Prediction.label,
            Prediction.predicted_at,
            PhotoLabel.label.label("sensor_label"),
            PhotoLabel.manual_label,
        )
        .outerjoin(PhotoLabel, PhotoLabel.photo_id == Prediction.photo_id)
        .order_by(Prediction.predicted_at, Prediction.id)
    )
    if since is not None:
        query = query.where(Prediction.predicted_at >= as_utc(since))
    if model_version is not None:
        query = query.where(Prediction.model_version == model_version)
    return [
        PredictionRow(
            model_version=row.model_version,
            predicted=row.label,
            # effective_label, inlined: the operator's label wins over the sensor's
            measured=row.manual_label if row.manual_label is not None else row.sensor_label,
            predicted_at=as_utc(row.predicted_at),
        )
        for row in session.execute(query)
    ]


def accuracy_report(
    session: Session,
    *,
    since: datetime | None = None,
    model_version: str | None = None,
    bucket: timedelta | None = None,
    min_count: int = 1,
) -> AccuracyReport:
    """:func:`summarize` of :func:`load_predictions`."""
    rows = load_predictions(session, since=since, model_version=model_version)
    return summarize(rows, bucket=bucket, min_count=min_count, since=since)


def live_accuracy(
    session: Session,
    *,
    since: datetime | None = None,
    model_version: str | None = None,
    bucket: timedelta | None = None,
    min_count: int = 1,
) -> dict[str, Any]:
    """The live accuracy as plain JSON-ready data: ``{"since", "scored", "pending_label", "versions": [{
    "model_version", "scored", "pending_label", "accuracy", "macro_f1", "per_class", "first_predicted_at",
    "last_predicted_at", "points"}]}`` (versions by first prediction; ``accuracy``/``macro_f1`` null while nothing is
    scored; ``points`` only with ``bucket``). Reads only."""
    return accuracy_report(
        session, since=since, model_version=model_version, bucket=bucket, min_count=min_count
    ).as_dict()


def pairs_of(rows: Sequence[PredictionRow]) -> list[tuple[str, str]]:
    """The scored ``(measured, predicted)`` pairs of some rows."""
    return [(r.measured, r.predicted) for r in rows if r.measured is not None]
