"""The front calling a real model tier: the API (real PostgreSQL, local object store) against `bentoml serve` of the
repository root (bentofile.yaml, as `uv run bentoml serve` there) with a tiny model in the session's BentoML store.

An upload gets its verdict from the tier; with the tier stopped an upload still succeeds and is kept "pending"; once
the tier is back on the same port, the API's own background retry fills the verdict in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from pzone.db.engine import make_engine
from pzone.db.models import Prediction
from pzone.tilt import TILT_CLASSES
from tests.support.api import make_app, signup
from tests.support.bentoml_store import fresh_store
from tests.support.photos import add_device, direct_upload, photo_bytes
from tests.support.tiny_model import TierProcess, import_tiny

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FALLEN = (0.0, 0.0, 5.0)  # the tiny model's bias: every photo is "fallen", so its answer is easy to recognise
MLFLOW_VERSION = "11"
MODEL_VERSION = f"pzone-tilt/{MLFLOW_VERSION}"
RETRY_INTERVAL_S = 0.5  # the API's background retry (default 30 s)


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[TierProcess]:
    home = fresh_store()
    import_tiny(tmp_path, FALLEN, MLFLOW_VERSION)
    process = TierProcess(home, tmp_path / "tier.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def predictions_of(database_url: str, photo_id: str) -> list[Prediction]:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(Prediction).where(Prediction.photo_id == photo_id)).all())
    finally:
        engine.dispose()


def assert_tier_verdict(photo: dict[str, Any], database_url: str) -> None:
    assert photo["verdict"] == "fallen" and photo["verdict"] in TILT_CLASSES
    assert photo["model_version"] == MODEL_VERSION
    probs = photo["verdict_probs"]
    assert set(probs) == set(TILT_CLASSES)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert max(probs, key=probs.get) == "fallen"
    rows = predictions_of(database_url, photo["id"])
    assert len(rows) == 1
    assert (rows[0].label, rows[0].model_version) == ("fallen", MODEL_VERSION)
    assert json.loads(rows[0].probs or "{}") == pytest.approx(probs)


def test_verdicts_come_from_the_real_tier_and_pending_ones_are_filled_in(
    tier: TierProcess, pg_url: str, tmp_path: Path
) -> None:
    app = make_app(
        pg_url,
        tmp_path / "data",
        model_tier_url=tier.url,
        model_tier_timeout_s=10.0,
        verdict_retry_interval_s=RETRY_INTERVAL_S,
    )
    add_device(pg_url)
    with TestClient(app) as client:
        csrf = signup(client, "front@example.com", "correct horse battery")

        # 1. The tier is up: the upload's answer already carries its verdict, and a predictions row is stored.
        first = direct_upload(client, csrf, photo_bytes((640, 480)))
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "stored"
        assert_tier_verdict(first.json(), pg_url)

        # 2. The tier is down: the upload itself succeeds, its verdict is pending, nothing is predicted.
        tier.stop()
        second = direct_upload(client, csrf, photo_bytes((320, 240)))
        assert second.status_code == 200, second.text
        pending = second.json()
        assert pending["status"] == "stored" and pending["verdict"] == "pending"
        assert pending["model_version"] is None
        assert predictions_of(pg_url, pending["id"]) == []
        time.sleep(3 * RETRY_INTERVAL_S)  # the background retry runs meanwhile and fails quietly
        assert client.get(f"/api/photos/{pending['id']}").json()["verdict"] == "pending"

        # 3. The tier is back on the same port: the API's background retry fills the verdict in by itself.
        tier.start()
        deadline = time.monotonic() + 30
        photo = client.get(f"/api/photos/{pending['id']}").json()
        while photo["verdict"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
            photo = client.get(f"/api/photos/{pending['id']}").json()
        assert photo["verdict"] != "pending", f"no verdict within 30 s; tier log: {tier.tail()}"
        assert_tier_verdict(photo, pg_url)
        # The first photo was not classified again.
        assert len(predictions_of(pg_url, first.json()["id"])) == 1
