"""Live accuracy: the scoring math, predictions written by the real photo flow, the API, revision 0004."""

from __future__ import annotations

import io
import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
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
from pzone.labels import LabelParams, refresh_labels, set_manual_label
from pzone.migrations import current, downgrade, upgrade
from pzone.telemetry import Limits
from pzone_api.verdicts import Verdict, apply_verdict, retry_pending
from pzone_ingest.batch import process_batch
from pzone_ingest.messages import from_iot_event
from tests.support.api import create_user_in_db, login, make_app, signup
from tests.support.model_tier import ModelTierStandIn

PASSWORD = "correct horse battery"
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


# --- predictions from the real photo flow -----------------------------------------------------------------------------


def photo_bytes(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (shade, 120, 200)).save(out, "JPEG", quality=90)
    return out.getvalue()


def ingest_reading(db_url: str, seq: int, tilt: float, at: datetime) -> None:
    """A reading of dev-1 measured and received at ``at`` (the way the IoT rule delivers it)."""
    rad = math.radians(tilt)
    event = {
        "v": 1,
        "device_id": "dev-1",
        "zone_id": "zone-1",
        "seq": seq,
        "ts": at.timestamp(),
        "ax": math.sin(rad),
        "ay": 0.0,
        "az": math.cos(rad),
        "received_at": int(at.timestamp() * 1000),
    }
    engine = make_engine(db_url)
    try:
        assert process_batch(engine, [from_iot_event(event)], Limits(), source="lambda").dead_letters == 0
    finally:
        engine.dispose()


def upload(client: TestClient, csrf: str, shade: int, taken_at: datetime) -> dict[str, Any]:
    response = client.post(
        "/api/photos/upload",
        files={"file": (f"{shade}.jpg", photo_bytes(shade), "image/jpeg")},
        data={"device_id": "dev-1", "taken_at": taken_at.isoformat()},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.integration
def test_predictions_from_the_photo_flow_two_versions(db_url: str, tmp_path: Path) -> None:
    taken = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    ingest_reading(db_url, 1, 3.0, taken)  # upright when every photo below was taken
    operator_id = create_user_in_db(db_url, "op@example.com", PASSWORD, role="operator")
    tier = ModelTierStandIn("pzone-tilt/1", "upright")
    app = make_app(db_url, tmp_path / "data", model_tier_url=tier.url, model_tier_timeout_s=2.0)
    tier.start()
    try:
        with TestClient(app) as client:
            csrf = signup(client, "ana@example.com", PASSWORD)
            a = upload(client, csrf, 10, taken)
            assert (a["verdict"], a["model_version"]) == ("upright", "pzone-tilt/1")
            tier.model_version, tier.label = "pzone-tilt/2", "fallen"  # a new champion deployed
            b, c = upload(client, csrf, 20, taken), upload(client, csrf, 30, taken)
            tier.stop()
            d = upload(client, csrf, 40, taken)
            assert d["verdict"] == "pending"  # no answer, no prediction
            tier.start()
            assert retry_pending(app.state.settings, app.state.engine, app.state.store) == 1
            engine: Engine = app.state.engine
            with Session(engine) as s:
                # a re-classification of A by the new version: a second row, the photo keeps the latest verdict
                photo_a = s.get(Photo, a["id"])
                assert photo_a is not None
                apply_verdict(s, photo_a, Verdict("fallen", {"fallen": 0.8}, "pzone-tilt/2"))
                s.commit()
                refresh_labels(s, LabelParams())
                set_manual_label(s, c["id"], "fallen", operator_id)  # the operator's label wins
                s.commit()
            e = upload(client, csrf, 50, taken)  # after the labels' refresh: pending a label
            assert client.get(f"/api/photos/{a['id']}").json()["verdict"] == "fallen"

            with Session(engine) as s:
                per_photo = dict(
                    s.execute(select(Prediction.photo_id, func.count()).group_by(Prediction.photo_id)).all()
                )
                assert per_photo == {a["id"]: 2, b["id"]: 1, c["id"]: 1, d["id"]: 1, e["id"]: 1}
                first = s.scalars(select(Prediction).where(Prediction.photo_id == b["id"])).one()
                assert first.model_version == "pzone-tilt/2" and first.label == "fallen" and first.probs
                live = live_accuracy(s)
                assert live_accuracy(s, model_version="pzone-tilt/1")["versions"] == live["versions"][:1]
                future = live_accuracy(s, since=datetime.now(UTC) + timedelta(minutes=1))
                assert future["versions"] == [] and future["pending_label"] == 0

            v1, v2 = live["versions"]
            assert (v1["model_version"], v1["scored"], v1["accuracy"], v1["macro_f1"]) == (
                "pzone-tilt/1",
                1,
                1.0,
                1.0,
            )
            # v2 predicted fallen five times: A, B, D measured upright (wrong), C fallen by the operator, E pending
            assert (v2["model_version"], v2["scored"], v2["pending_label"]) == ("pzone-tilt/2", 4, 1)
            assert v2["accuracy"] == 0.25
            # upright: never predicted → 0; fallen: P 1/4, R 1 → 0.4
            assert v2["macro_f1"] == pytest.approx(0.2)
            assert live["pending_label"] == 1 and live["scored"] == 5

            # the history still shows predicted vs measured
            history = {p["id"]: p for p in client.get("/api/photos").json()["items"]}
            assert history[b["id"]]["verdict"] == "fallen"
            assert history[b["id"]]["measured"]["label"] == "upright"
            assert history[b["id"]]["measured"]["source"] == "sensor"
            assert history[c["id"]]["measured"]["source"] == "manual" and history[e["id"]]["measured"] is None

            client.cookies.clear()
            login(client, "op@example.com", PASSWORD)
            answer = client.get("/api/accuracy", params={"window": "1h", "bucket": "15m"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["pending_label"] == 1 and body["bucket_s"] == 900
            versions = {v["model_version"]: v for v in body["versions"]}
            assert list(versions) == ["pzone-tilt/1", "pzone-tilt/2"]
            assert versions["pzone-tilt/2"]["accuracy"] == 0.25
            assert sum(p["n"] for p in versions["pzone-tilt/2"]["points"]) == 4
            assert set(versions["pzone-tilt/2"]["points"][0]) == {"t", "accuracy", "macro_f1", "n"}
            only = client.get("/api/accuracy", params={"model_version": "pzone-tilt/1"}).json()
            assert [v["model_version"] for v in only["versions"]] == ["pzone-tilt/1"]
    finally:
        tier.stop()


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


# --- the API ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(db_url, tmp_path / "data")) as test_client:
        yield test_client


@pytest.mark.integration
def test_accuracy_needs_an_operator(client: TestClient, db_url: str) -> None:
    assert client.get("/api/accuracy").status_code == 401
    signup(client, "ana@example.com", PASSWORD)
    refused = client.get("/api/accuracy")
    assert refused.status_code == 403 and "Operator" in refused.json()["detail"]
    client.cookies.clear()
    create_user_in_db(db_url, "op@example.com", PASSWORD, role="operator")
    login(client, "op@example.com", PASSWORD)
    answer = client.get("/api/accuracy")
    assert answer.status_code == 200
    body = answer.json()
    assert body["versions"] == [] and body["pending_label"] == 0 and body["bucket_s"] == 3600


@pytest.mark.integration
@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"window": "0"}, "window", "positive duration"),
        ({"window": "abc"}, "window", "positive duration"),
        ({"window": "-5m"}, "window", "positive duration"),
        ({"window": "400d"}, "window", "at most 366d"),
        ({"bucket": "1w"}, "bucket", "positive duration"),
        ({"window": "1d", "bucket": "2d"}, "bucket", "longer than the window"),
        ({"window": "7d", "bucket": "1m"}, "bucket", "at most 1000 buckets"),
        ({"min_count": "0"}, "min_count", "greater than or equal to 1"),
    ],
)
def test_bad_parameters_are_a_clear_422(
    client: TestClient, db_url: str, params: dict[str, str], field: str, words: str
) -> None:
    create_user_in_db(db_url, "op@example.com", PASSWORD, role="operator")
    login(client, "op@example.com", PASSWORD)
    answer = client.get("/api/accuracy", params=params)
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["query", field] and words in error["msg"]


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
