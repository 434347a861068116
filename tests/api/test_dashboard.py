"""The device list and the operators' dashboard API on data made by the real ingest step (PostgreSQL and SQLite)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from pzone.db.engine import make_engine
from pzone.db.models import Alarm, Device, SensorReading, Zone
from pzone.telemetry import Limits
from pzone_ingest.batch import process_batch
from pzone_ingest.messages import from_iot_event, from_mqtt
from tests.support.api import create_user_in_db, login, make_app, signup

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
DASHBOARD_PATHS = (
    "/api/dashboard/devices",
    "/api/dashboard/alarms",
    "/api/dashboard/devices/d1/tilt",
    "/api/dashboard/summary",
)


def reading(
    device: str, seq: int, tilt: float, zone: str = "zone-1", ago_s: float = 0.0, received_ago_s: float = 0.0
) -> dict[str, Any]:
    """An IoT-rule event measured ``ago_s`` seconds ago (device clock) and received ``received_ago_s`` ago."""
    rad = math.radians(tilt)
    now = time.time()
    return {
        "v": 1,
        "device_id": device,
        "topic_device_id": device,
        "zone_id": zone,
        "seq": seq,
        "ts": now - ago_s,
        "ax": math.sin(rad),
        "ay": 0.0,
        "az": math.cos(rad),
        "battery": 80 - seq % 10,
        "received_at": int((now - received_ago_s) * 1000),
    }


def ingest(
    db_url: str, events: list[dict[str, Any]], statuses: dict[tuple[str, str], str] | None = None
) -> None:
    items = [from_iot_event(e) for e in events]
    for (zone, device), status in (statuses or {}).items():
        payload = f'{{"v":1,"status":"{status}"}}'.encode()
        items.append(from_mqtt(f"pzone/{zone}/{device}/status", payload, int(time.time() * 1000), 4096))
    engine = make_engine(db_url)
    try:
        result = process_batch(engine, items, Limits(), source="lambda")
    finally:
        engine.dispose()
    assert result.dead_letters == 0


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(db_url, tmp_path / "data")) as test_client:
        yield test_client


@pytest.fixture
def operator(client: TestClient, db_url: str) -> TestClient:
    """The client, logged in as an operator."""
    create_user_in_db(db_url, "op@example.com", PASSWORD, role="operator")
    login(client, "op@example.com", PASSWORD)
    return client


def test_roles_anonymous_401_client_403_operator_200(client: TestClient, db_url: str) -> None:
    ingest(db_url, [reading("d1", 1, 3)])
    for path in (*DASHBOARD_PATHS, "/api/devices"):
        assert client.get(path).status_code == 401, path
    signup(client, "ana@example.com", PASSWORD)  # sign-up makes clients only
    for path in DASHBOARD_PATHS:
        response = client.get(path)
        assert response.status_code == 403 and "Operator" in response.json()["detail"], path
    assert client.get("/api/devices").json() == [{"id": "d1", "zone_id": "zone-1", "last_state": "upright"}]
    client.cookies.clear()
    create_user_in_db(db_url, "op@example.com", PASSWORD, role="operator")
    login(client, "op@example.com", PASSWORD)
    for path in (*DASHBOARD_PATHS, "/api/devices"):
        assert client.get(path).status_code == 200, path


def test_device_list_sorted_by_zone_then_id(operator: TestClient, db_url: str) -> None:
    ingest(
        db_url,
        [reading("b", 1, 3, "zone-2"), reading("a", 1, 40, "zone-2"), reading("c", 1, 80, "zone-1")],
        statuses={("zone-3", "x"): "online"},  # a device known only from its status: no state yet
    )
    assert operator.get("/api/devices").json() == [
        {"id": "c", "zone_id": "zone-1", "last_state": "fallen"},
        {"id": "a", "zone_id": "zone-2", "last_state": "tilted"},
        {"id": "b", "zone_id": "zone-2", "last_state": "upright"},
        {"id": "x", "zone_id": "zone-3", "last_state": None},
    ]
    rows = operator.get("/api/dashboard/devices").json()
    assert [(r["zone_id"], r["id"]) for r in rows] == [
        ("zone-1", "c"),
        ("zone-2", "a"),
        ("zone-2", "b"),
        ("zone-3", "x"),
    ]
    x = rows[3]
    assert x["status"] == "online" and x["last_seq"] is None and x["open_alarm"] is None


def test_open_alarm_on_fallen_device_then_closed_by_upright_reading(
    operator: TestClient, db_url: str
) -> None:
    ingest(db_url, [reading("d1", 1, 3), reading("d1", 2, 85), reading("d2", 1, 2)])
    rows = {r["id"]: r for r in operator.get("/api/dashboard/devices").json()}
    d1, d2 = rows["d1"], rows["d2"]
    assert d1["last_state"] == "fallen" and d1["last_seq"] == 2 and d1["battery"] == 78
    assert d1["last_tilt_deg"] == pytest.approx(85, abs=1e-6)
    assert d1["last_measured_at"].endswith(("+00:00", "Z"))  # UTC, also on SQLite
    alarm = d1["open_alarm"]
    assert set(alarm) == {"id", "opened_at", "opened_tilt_deg"}
    assert alarm["opened_tilt_deg"] == pytest.approx(85, abs=1e-6)
    assert d2["open_alarm"] is None and d2["last_state"] == "upright"
    opened = operator.get("/api/dashboard/alarms", params={"open": "true"}).json()
    assert [(a["id"], a["device_id"], a["opened_seq"], a["closed_at"]) for a in opened] == [
        (alarm["id"], "d1", 2, None)
    ]
    assert operator.get("/api/dashboard/alarms", params={"open": "false"}).json() == []

    ingest(db_url, [reading("d1", 3, 45), reading("d1", 4, 1)])  # tilted changes nothing, upright closes
    d1 = next(r for r in operator.get("/api/dashboard/devices").json() if r["id"] == "d1")
    assert d1["open_alarm"] is None and d1["last_state"] == "upright"
    assert operator.get("/api/dashboard/alarms", params={"open": "true"}).json() == []
    (closed,) = operator.get("/api/dashboard/alarms", params={"open": "false"}).json()
    assert closed["id"] == alarm["id"] and closed["closed_seq"] == 4 and closed["closed_at"] is not None
    assert closed["kind"] == "fallen" and closed["zone_id"] == "zone-1"
    assert set(closed) == {
        "id",
        "device_id",
        "zone_id",
        "kind",
        "opened_at",
        "opened_seq",
        "opened_tilt_deg",
        "closed_at",
        "closed_seq",
    }


def test_alarms_newest_first_with_limit(operator: TestClient, db_url: str) -> None:
    # Three alarms of d1 (falls at 50, 30 and 10 minutes ago, each closed), one open on d2 (5 minutes ago).
    events = []
    for n, ago in enumerate((50, 30, 10)):
        events += [
            reading("d1", 2 * n + 1, 88, ago_s=ago * 60),
            reading("d1", 2 * n + 2, 0, ago_s=ago * 60 - 30),
        ]
    events.append(reading("d2", 1, 70, ago_s=300))
    ingest(db_url, events)
    everything = operator.get("/api/dashboard/alarms").json()
    assert [(a["device_id"], a["opened_seq"]) for a in everything] == [
        ("d2", 1),
        ("d1", 5),
        ("d1", 3),
        ("d1", 1),
    ]
    opened_at = [datetime.fromisoformat(a["opened_at"]) for a in everything]
    assert opened_at == sorted(opened_at, reverse=True)
    assert [a["opened_seq"] for a in operator.get("/api/dashboard/alarms?limit=2").json()] == [1, 5]
    assert [a["opened_seq"] for a in operator.get("/api/dashboard/alarms?open=false&limit=2").json()] == [
        5,
        3,
    ]
    for bad in ("limit=0", "limit=1001", "open=maybe"):
        assert operator.get(f"/api/dashboard/alarms?{bad}").status_code == 422, bad


def test_tilt_window_order_limit_404_and_422(operator: TestClient, db_url: str) -> None:
    # Measured 90, 50, 40, 30, 20 and 10 minutes ago; sent out of order (a device's buffer flushed later).
    minutes_ago = {1: 90, 2: 50, 3: 40, 4: 30, 5: 20, 6: 10}
    tilts = {1: 1.0, 2: 5.0, 3: 30.0, 4: 70.0, 5: 10.0, 6: 2.0}
    ingest(db_url, [reading("d1", s, tilts[s], ago_s=minutes_ago[s] * 60) for s in (6, 2, 4, 1, 3, 5)])
    ingest(db_url, [reading("d2", 1, 50, ago_s=15 * 60)])  # another device's reading stays out

    body = operator.get("/api/dashboard/devices/d1/tilt").json()  # default: the last 60 minutes
    assert body["device_id"] == "d1"
    points = body["points"]
    assert [p["tilt_deg"] for p in points] == pytest.approx([5.0, 30.0, 70.0, 10.0, 2.0], abs=1e-6)
    assert [p["state"] for p in points] == ["upright", "tilted", "fallen", "upright", "upright"]
    measured = [datetime.fromisoformat(p["measured_at"]) for p in points]
    assert measured == sorted(measured) and all(m.utcoffset() == timedelta(0) for m in measured)
    assert set(points[0]) == {"measured_at", "tilt_deg", "state"}

    wide = operator.get("/api/dashboard/devices/d1/tilt?minutes=120").json()["points"]
    assert len(wide) == 6 and wide[0]["tilt_deg"] == pytest.approx(1.0)
    narrow = operator.get("/api/dashboard/devices/d1/tilt?minutes=25").json()["points"]
    assert [p["tilt_deg"] for p in narrow] == pytest.approx([10.0, 2.0])
    # The limit keeps the newest points of the window, still oldest first.
    limited = operator.get("/api/dashboard/devices/d1/tilt?minutes=120&limit=2").json()["points"]
    assert [p["tilt_deg"] for p in limited] == pytest.approx([10.0, 2.0])
    assert operator.get("/api/dashboard/devices/d1/tilt?minutes=5").json() == {
        "device_id": "d1",
        "points": [],
    }

    missing = operator.get("/api/dashboard/devices/nope/tilt")
    assert missing.status_code == 404
    assert missing.json() == {"detail": {"code": "not_found", "reason": "no such device"}}
    for bad in ("minutes=0", "minutes=10081", "limit=0", "limit=5001", "minutes=abc"):
        assert operator.get(f"/api/dashboard/devices/d1/tilt?{bad}").status_code == 422, bad
    for ok in ("minutes=1", "minutes=10080", "limit=1", "limit=5000"):
        assert operator.get(f"/api/dashboard/devices/d1/tilt?{ok}").status_code == 200, ok


def test_summary_counts_match_the_database(operator: TestClient, db_url: str) -> None:
    empty = operator.get("/api/dashboard/summary").json()
    assert empty == {
        "zones": 0,
        "devices": 0,
        "online": 0,
        "open_alarms": 0,
        "readings_last_hour": 0,
        "states": {"upright": 0, "tilted": 0, "fallen": 0},
    }
    ingest(
        db_url,
        [
            reading("a", 1, 2, "zone-1", ago_s=7200, received_ago_s=7200),  # received two hours ago
            reading("a", 2, 3, "zone-1"),
            reading("b", 1, 85, "zone-1"),
            reading("c", 1, 35, "zone-2"),
            reading("d", 1, 89, "zone-2"),
            reading("d", 2, 88, "zone-2"),
        ],
        statuses={("zone-1", "a"): "online", ("zone-2", "c"): "online", ("zone-2", "d"): "offline"},
    )
    summary = operator.get("/api/dashboard/summary").json()
    assert summary == {
        "zones": 2,
        "devices": 4,
        "online": 2,
        "open_alarms": 2,
        "readings_last_hour": 5,
        "states": {"upright": 1, "tilted": 1, "fallen": 2},
    }
    engine = make_engine(db_url)
    try:
        with Session(engine) as db:
            assert summary["zones"] == db.scalar(select(func.count()).select_from(Zone))
            assert summary["devices"] == db.scalar(select(func.count()).select_from(Device))
            assert summary["open_alarms"] == db.scalar(
                select(func.count()).select_from(Alarm).where(Alarm.closed_at.is_(None))
            )
            hour_ago = datetime.now(UTC) - timedelta(hours=1)
            assert summary["readings_last_hour"] == db.scalar(
                select(func.count()).select_from(SensorReading).where(SensorReading.received_at >= hour_ago)
            )
            by_state = dict(
                db.execute(select(Device.last_state, func.count()).group_by(Device.last_state)).all()
            )
    finally:
        engine.dispose()
    assert summary["states"] == by_state
    dashboard = operator.get("/api/dashboard/devices").json()
    assert sum(r["open_alarm"] is not None for r in dashboard) == summary["open_alarms"]
    assert sum(r["status"] == "online" for r in dashboard) == summary["online"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_dashboard_devices_is_one_query_whatever_the_fleet_size(operator: TestClient, db_url: str) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = operator.app.state.engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", record)
    try:
        counts = []
        for size in (2, 12):
            ingest(db_url, [reading(f"dev-{n:02d}", 1 + size, 80 if n % 2 else 3) for n in range(size)])
            statements.clear()
            rows = operator.get("/api/dashboard/devices").json()
            assert len(rows) == size and sum(r["open_alarm"] is not None for r in rows) == size // 2
            counts.append((sum("FROM devices" in s for s in statements), len(statements)))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert counts[0][0] == 1 and counts[0] == counts[1]
