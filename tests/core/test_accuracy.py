"""Live accuracy (pzone.accuracy): the scoring math, the query over thousands of predictions on both databases,
and revision 0004."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, insert, inspect, select
from sqlalchemy.orm import Session

from pzone.accuracy import (
    PredictionRow,
    bucket_start,
    bucketed,
    live_accuracy,
    load_predictions,
    rolling,
    score,
    summarize,
)
from pzone.db.engine import make_engine
from pzone.db.models import Photo, PhotoLabel, Prediction, User, table_of
from pzone.migrations import current, downgrade, upgrade

T = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # on the hour


def row(version: str, predicted: str, measured: str | None, minutes: float = 0.0) -> PredictionRow:
    return PredictionRow(version, predicted, measured, T + timedelta(minutes=minutes))


# --- the scoring math (hand-computed) ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_accuracy_and_macro_f1_with_a_class_never_predicted() -> None:
    # measured, predicted
    s = score([("upright", "upright")] * 2 + [("tilted", "upright"), ("fallen", "fallen")])
    assert (s.n, s.correct, s.accuracy) == (4, 3, 0.75)
    upright, tilted, fallen = s.per_class["upright"], s.per_class["tilted"], s.per_class["fallen"]
    assert (
        upright.precision == pytest.approx(2 / 3)
        and upright.recall == 1.0
        and upright.f1 == pytest.approx(0.8)
    )
    assert (tilted.precision, tilted.recall, tilted.f1, tilted.support, tilted.predicted) == (
        0.0,
        0.0,
        0.0,
        1,
        0,
    )
    assert fallen.f1 == 1.0
    assert s.macro_f1 == pytest.approx((0.8 + 0.0 + 1.0) / 3)
    assert list(s.per_class) == ["upright", "tilted", "fallen"]


@pytest.mark.unit
def test_macro_f1_counts_only_classes_that_occur() -> None:
    only_upright = score([("upright", "upright")] * 3)
    assert (
        only_upright.accuracy == 1.0
        and only_upright.macro_f1 == 1.0
        and list(only_upright.per_class) == ["upright"]
    )
    # a class predicted but never measured: precision 0 (0 of 1), recall undefined → 0, F1 0
    s = score([("upright", "fallen"), ("upright", "upright")])
    assert s.accuracy == 0.5
    assert s.per_class["upright"].f1 == pytest.approx(2 / 3) and s.per_class["fallen"].f1 == 0.0
    assert s.macro_f1 == pytest.approx(1 / 3)
    empty = score([])
    assert (empty.n, empty.accuracy, empty.macro_f1, empty.per_class) == (0, None, None, {})


@pytest.mark.unit
def test_buckets_are_aligned_skip_pending_and_honour_min_count() -> None:
    rows = [
        row("v1", "upright", "upright", 0),
        row("v1", "upright", None, 5),  # pending: not scored
        row("v1", "fallen", "upright", 10),
        row("v1", "fallen", "fallen", 59.9),
        row("v1", "tilted", "tilted", 61),
    ]
    points = bucketed(rows, bucket=timedelta(hours=1))
    assert [(p.t, p.n) for p in points] == [(T, 3), (T + timedelta(hours=1), 1)]
    first = points[0]
    assert first.accuracy == pytest.approx(2 / 3)
    # upright: P 1, R 1/2 → 2/3; fallen: P 1/2, R 1 → 2/3
    assert first.macro_f1 == pytest.approx(2 / 3)
    assert [p.n for p in bucketed(rows, bucket=timedelta(hours=1), min_count=2)] == [3]
    assert bucket_start(T + timedelta(minutes=17), timedelta(minutes=15)) == T + timedelta(minutes=15)
    assert bucket_start(datetime(2026, 3, 1, 12, 17), timedelta(hours=1)) == T  # naive = UTC (SQLite)
    with pytest.raises(ValueError):
        bucketed(rows, bucket=timedelta(0))
    with pytest.raises(ValueError):
        bucketed(rows, bucket=timedelta(hours=1), min_count=0)


@pytest.mark.unit
def test_rolling_window_of_the_last_n_scored() -> None:
    hits = [True, False, True, True]
    rows = [row("v1", "upright", "upright" if hit else "fallen", i) for i, hit in enumerate(hits)]
    rows.insert(2, row("v1", "upright", None, 1.5))  # pending: skipped
    points = rolling(rows, last=2)
    assert [(p.n, p.accuracy) for p in points] == [(2, 0.5), (2, 0.5), (2, 1.0)]
    assert [p.t for p in points] == [T + timedelta(minutes=m) for m in (1, 2, 3)]
    assert [p.accuracy for p in rolling(rows, last=2, min_count=1)] == [1.0, 0.5, 0.5, 1.0]
    with pytest.raises(ValueError):
        rolling(rows, last=0)
    with pytest.raises(ValueError):
        rolling(rows, last=2, min_count=3)


@pytest.mark.unit
def test_summary_per_version_with_one_never_labeled() -> None:
    rows = [
        row("v1", "upright", "upright", 0),
        row("v1", "tilted", "upright", 1),
        row("v2", "fallen", None, 2),
        row("v2", "fallen", None, 3),
        row("v1", "upright", None, 4),
    ]
    report = summarize(rows, bucket=timedelta(minutes=30))
    assert [v.model_version for v in report.versions] == ["v1", "v2"]
    v1, v2 = report.versions
    assert (v1.scored, v1.pending_label, v1.accuracy) == (2, 1, 0.5)
    # upright: P 1, R 1/2 → 2/3; tilted: P 0 → 0
    assert v1.macro_f1 == pytest.approx(1 / 3)
    assert [(p.t, p.n) for p in v1.points] == [(T, 2)]
    assert (v2.scored, v2.pending_label, v2.accuracy, v2.macro_f1, v2.points) == (0, 2, None, None, [])
    assert report.pending_label == 3 and report.scored == 2
    data = report.as_dict()
    assert data["versions"][1]["accuracy"] is None and data["versions"][0]["points"][0]["t"] == T.isoformat()
    assert summarize([]).as_dict() == {"since": None, "scored": 0, "pending_label": 0, "versions": []}


# --- predictions go with their photo -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_deleting_a_photo_deletes_its_predictions(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        ids = seed(engine, 3)
        with Session(engine) as s:
            s.execute(table_of(Photo).delete().where(Photo.id == ids[0]))
            s.commit()
            assert s.scalar(select(func.count()).select_from(Prediction)) == 2
    finally:
        engine.dispose()


# --- the query: thousands of rows, both databases ---------------------------------------------------------------------


def seed(engine: Engine, count: int, *, labeled_every: int = 1) -> list[str]:
    """``count`` stored photos, each with one prediction (two versions, alternating) made over the last hours; every
    ``labeled_every``-th photo has a sensor label."""
    user_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    classes = ("upright", "tilted", "fallen")
    photos, predictions, labels = [], [], []
    for i in range(count):
        photo_id = str(uuid.uuid4())
        photos.append({"id": photo_id, "user_id": user_id, "status": "stored", "verdict": classes[i % 3]})
        predictions.append(
            {
                "photo_id": photo_id,
                "model_version": f"v{1 + i % 2}",
                "label": classes[i % 3],
                "probs": None,
                "predicted_at": now - timedelta(seconds=5 * (count - i)),
            }
        )
        if i % labeled_every == 0:
            labels.append({"photo_id": photo_id, "label": classes[(i // 2) % 3], "reason": "ok"})
    with Session(engine) as s:
        s.execute(
            insert(table_of(User)), [{"id": user_id, "email": f"{user_id}@x.test", "password_hash": "-"}]
        )
        s.execute(insert(table_of(Photo)), photos)
        s.execute(insert(table_of(Prediction)), predictions)
        if labels:
            s.execute(insert(table_of(PhotoLabel)), labels)
        s.commit()
    return [p["id"] for p in photos]


@pytest.mark.integration
def test_thousands_of_predictions_in_well_under_a_second(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        seed(engine, 4000, labeled_every=4)
        with Session(engine) as s:
            load_predictions(s)  # warm the connection and the caches
            started = time.perf_counter()
            live = live_accuracy(s, bucket=timedelta(minutes=15))
            elapsed = time.perf_counter() - started
        assert elapsed < 0.5, elapsed
        assert live["scored"] == 1000 and live["pending_label"] == 3000
        assert [v["model_version"] for v in live["versions"]] == ["v1", "v2"]
        assert sum(p["n"] for v in live["versions"] for p in v["points"]) == 1000
    finally:
        engine.dispose()


# --- the migration ----------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_migration_0004_upgrade_backfill_and_downgrade(db_url: str) -> None:
    def schema() -> tuple[set[str], set[str]]:
        eng = make_engine(db_url)
        try:
            inspector = inspect(eng)
            tables = set(inspector.get_table_names())
            indexes = (
                {ix["name"] for ix in inspector.get_indexes("predictions")}
                if "predictions" in tables
                else set()
            )
            return tables, {name for name in indexes if name}
        finally:
            eng.dispose()

    downgrade(db_url, "0004")  # later revisions change other tables
    assert current(db_url) == "0004"
    tables, indexes = schema()
    assert "predictions" in tables
    assert indexes == {"ix_predictions_version_predicted", "ix_predictions_photo_id"}
    downgrade(db_url, "0003")
    assert current(db_url) == "0003" and "predictions" not in schema()[0]
    # a verdict given before 0004 becomes a prediction on upgrade; a pending photo does not
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(table_of(User)), [{"id": "u1", "email": "u1@x.test", "password_hash": "-"}])
            conn.execute(
                insert(table_of(Photo)),
                [
                    {
                        "id": "p1",
                        "user_id": "u1",
                        "status": "stored",
                        "verdict": "tilted",
                        "model_version": "v0",
                        "verdict_probs": '{"tilted": 0.7}',
                        "verdict_at": T,
                    },
                    {
                        "id": "p2",
                        "user_id": "u1",
                        "status": "stored",
                        "verdict": "pending",
                        "model_version": None,
                        "verdict_probs": None,
                        "verdict_at": None,
                    },
                ],
            )
    finally:
        engine.dispose()
    upgrade(db_url, "0004")
    assert current(db_url) == "0004" and "predictions" in schema()[0]
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            (only,) = s.scalars(select(Prediction)).all()
            assert (only.photo_id, only.model_version, only.label, only.probs) == (
                "p1",
                "v0",
                "tilted",
                '{"tilted": 0.7}',
            )
            assert bucket_start(only.predicted_at, timedelta(minutes=1)) == T
    finally:
        engine.dispose()
