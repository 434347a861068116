"""Live accuracy through the API: predictions written by the real photo flow (two model versions, a retry, a
manual label) scored by GET /api/accuracy, which only operators may read, with clear 422s for bad parameters."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from pzone.accuracy import live_accuracy
from pzone.db.engine import make_engine
from pzone.db.models import Photo, Prediction
from pzone.labels import LabelParams, refresh_labels, set_manual_label
from pzone.telemetry import Limits
from pzone.tier_contract import Verdict
from pzone_api.photo_verdicts import apply_verdict, retry_pending
from pzone_ingest.batch import process_batch
from pzone_ingest.messages import from_iot_event
from tests.support.api import create_user_in_db, login, make_app, signup
from tests.support.model_tier import ModelTierStandIn

PASSWORD = "correct horse battery"


def shaded_jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (shade, 120, 200)).save(out, "JPEG", quality=90)
    return out.getvalue()


def ingest_reading(db_url: str, seq: int, tilt: float, at: datetime) -> None:
    """A reading of dev-1 measured and received at ``at`` (the way the IoT rule delivers it)."""
    rad = math.radians(tilt)
    event = {
        "v": 1,
        "device_id": "dev-1",
        "topic_device_id": "dev-1",
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
        files={"file": (f"{shade}.jpg", shaded_jpeg(shade), "image/jpeg")},
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
