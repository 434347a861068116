"""The label routes: GET and PUT /api/photos/{id}/label (owners read, operators set and clear, CSRF), and the
measured label in the photo history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from pzone.db.engine import make_engine
from pzone.labels import LabelParams, refresh_labels
from tests.support.api import create_user_in_db, login, make_app
from tests.support.labels import PASSWORD, label_scene


@pytest.fixture
def labels_api(db_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The API over the labelling scene, its labels refreshed, with an operator and a second client."""
    engine = make_engine(db_url)
    try:
        scene = label_scene(engine, db_url)
        create_user_in_db(db_url, "op@example.com", PASSWORD, role="operator")
        create_user_in_db(db_url, "bob@example.com", PASSWORD)
        with Session(engine, expire_on_commit=False) as s:
            refresh_labels(s, LabelParams())
            s.commit()
    finally:
        engine.dispose()
    with TestClient(make_app(db_url, tmp_path / "data")) as client:
        yield {"client": client, **scene}


@pytest.mark.integration
def test_label_routes_roles_and_csrf(labels_api: dict[str, Any]) -> None:
    client: TestClient = labels_api["client"]
    exact = labels_api["photos"]["exact"]
    path = f"/api/photos/{exact}/label"
    assert client.get(path).status_code == 401
    assert client.put(path, json={"label": "fallen"}).status_code == 401

    csrf = login(client, "ana@example.com", PASSWORD)  # the owner, a client
    mine = client.get(path)
    assert mine.status_code == 200
    body = mine.json()
    assert body["label"] == "upright" and body["source"] == "sensor" and body["reason"] == "ok"
    assert body["gap_s"] == 0.0 and body["readings_in_window"] == 2 and body["manual_label"] is None
    refused = client.put(path, json={"label": "fallen"}, headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403 and "Operator" in refused.json()["detail"]

    client.cookies.clear()
    login(client, "bob@example.com", PASSWORD)  # another client: not his photo
    assert client.get(path).status_code == 404

    client.cookies.clear()
    csrf = login(client, "op@example.com", PASSWORD)
    assert client.put(path, json={"label": "fallen"}).status_code == 403  # no CSRF header
    assert client.put(path, json={"label": "fallen"}, headers={"X-CSRF-Token": "nope"}).status_code == 403
    assert client.get(path).status_code == 200  # operators read any photo's label


@pytest.mark.integration
def test_operator_sets_and_clears_a_label_and_the_history_shows_it(labels_api: dict[str, Any]) -> None:
    client: TestClient = labels_api["client"]
    photos = labels_api["photos"]
    path = f"/api/photos/{photos['exact']}/label"
    csrf = login(client, "op@example.com", PASSWORD)
    headers = {"X-CSRF-Token": csrf}
    set_ = client.put(path, json={"label": "fallen"}, headers=headers)
    assert set_.status_code == 200, set_.text
    body = set_.json()
    assert body["label"] == "fallen" and body["source"] == "manual" and body["sensor_label"] == "upright"
    assert body["manual_by"] and body["manual_at"].endswith(("+00:00", "Z"))
    assert client.get(path).json()["label"] == "fallen"
    # a photo the sensor could not label
    quiet = client.put(
        f"/api/photos/{photos['quiet']}/label", json={"label": "tilted"}, headers=headers
    ).json()
    assert quiet["label"] == "tilted" and quiet["reason"] == "no_reading_in_window"

    for bad in ({"label": "sideways"}, {}, {"label": 3}):
        assert client.put(path, json=bad, headers=headers).status_code == 422, bad
    for missing in ("no-such-photo", photos["awaiting"]):
        response = client.put(f"/api/photos/{missing}/label", json={"label": "fallen"}, headers=headers)
        assert response.status_code == 404 and response.json()["detail"]["code"] == "not_found"

    client.cookies.clear()
    login(client, "ana@example.com", PASSWORD)
    items = {
        item["id"]: item for item in client.get("/api/photos", params={"page_size": 100}).json()["items"]
    }
    assert items[photos["exact"]]["measured"] == {
        "label": "fallen",
        "source": "manual",
        "quality": 1.0,
        "gap_s": None,
    }
    assert items[photos["exact"]]["measured_state"] == "fallen"
    skewed = items[photos["skewed"]]["measured"]
    assert (
        skewed["label"] == "fallen" and skewed["source"] == "sensor" and skewed["gap_s"] == pytest.approx(5.0)
    )
    assert 0 < skewed["quality"] <= 1
    assert items[photos["moving"]]["measured"] is None and items[photos["moving"]]["measured_state"] is None
    one = client.get(f"/api/photos/{photos['skewed']}").json()
    assert one["measured"] == skewed

    client.cookies.clear()
    csrf = login(client, "op@example.com", PASSWORD)
    cleared = client.put(path, json={"label": None}, headers={"X-CSRF-Token": csrf})
    assert cleared.status_code == 200
    assert cleared.json()["label"] == "upright" and cleared.json()["source"] == "sensor"
    assert cleared.json()["manual_label"] is None
