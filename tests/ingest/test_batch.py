"""The shared ingest step and the Lambda handler on real PostgreSQL and SQLite."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pzone.db.engine import make_engine
from pzone.db.models import Alarm, DeadLetter, Device, SensorReading
from pzone.migrations import alembic_config, current, downgrade, upgrade
from pzone.telemetry import Limits
from pzone_ingest.batch import process_batch
from pzone_ingest.messages import from_iot_event, from_mqtt
from tests.support.ingest import count, iot_event

pytestmark = pytest.mark.integration
LIMITS = Limits()


def ingest(engine: Engine, events: list[Any]) -> dict[str, int]:
    return process_batch(engine, [from_iot_event(e) for e in events], LIMITS, source="lambda").as_dict()


def test_migrations_upgrade_and_downgrade(db_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert head is not None and current(db_url) == head
    downgrade(db_url, "base")
    assert current(db_url) is None
    upgrade(db_url)
    assert current(db_url) == head


def test_replayed_messages_are_not_second_rows(engine: Engine) -> None:
    batch = [iot_event("d1", seq) for seq in range(1, 11)]
    assert ingest(engine, batch)["inserted"] == 10
    replay = ingest(engine, batch + batch[:3])
    assert replay["inserted"] == 0 and replay["duplicates"] == 13
    assert count(engine, SensorReading) == 10


def test_alarm_opens_on_fall_and_closes_when_upright(engine: Engine) -> None:
    result = ingest(engine, [iot_event("d1", 1, 3), iot_event("d1", 2, 85), iot_event("d1", 3, 40)])
    assert result["alarms_opened"] == 1
    with engine.connect() as conn:
        alarm = conn.execute(select(Alarm)).one()
    assert alarm.opened_seq == 2 and alarm.closed_at is None
    # tilted (40°) does not close it; a later fall does not open a second one
    assert ingest(engine, [iot_event("d1", 4, 89)])["alarms_opened"] == 0
    assert ingest(engine, [iot_event("d1", 5, 1)])["alarms_closed"] == 1
    with engine.connect() as conn:
        alarm = conn.execute(select(Alarm)).one()
        device = conn.execute(select(Device)).one()
    assert alarm.closed_seq == 5
    assert device.last_seq == 5 and device.last_state == "upright" and device.battery == 77


def test_fall_and_recovery_inside_one_batch_and_out_of_order(engine: Engine) -> None:
    # Arrival order differs from sequence order (an offline buffer flushed late): the sequence decides.
    result = ingest(engine, [iot_event("d1", 3, 2), iot_event("d1", 1, 2), iot_event("d1", 2, 80)])
    assert result["alarms_opened"] == 1 and result["alarms_closed"] == 1
    assert count(engine, Alarm, Alarm.closed_at.is_not(None)) == 1
    # A late reading older than the device's latest changes no state.
    assert ingest(engine, [iot_event("d1", 10, 2)])["inserted"] == 1
    late = ingest(engine, [iot_event("d1", 9, 85)])
    assert late["inserted"] == 1 and late["alarms_opened"] == 0
    with engine.connect() as conn:
        assert conn.execute(select(Device.last_seq, Device.last_state)).one() == (10, "upright")


def test_device_moving_zone_follows_its_latest_reading(engine: Engine) -> None:
    ingest(engine, [iot_event("d1", 1, zone="zone-a")])
    ingest(engine, [iot_event("d1", 2, zone="zone-b")])
    with engine.connect() as conn:
        assert conn.execute(select(Device.zone_id)).scalar_one() == "zone-b"
        assert sorted(conn.execute(select(SensorReading.zone_id)).scalars()) == ["zone-a", "zone-b"]


def test_invalid_events_become_dead_letters_and_never_fail_the_rest(engine: Engine) -> None:
    bad = [
        "not an object",
        [1, 2],
        None,
        iot_event("d1", 100, v=9),
        iot_event("d1", 101, ax="north"),
        {k: v for k, v in iot_event("d1", 102).items() if k != "seq"},
        iot_event("d1", 103, az=0.0, ax=0.0),
    ]
    good = [iot_event("d1", seq) for seq in range(1, 4)]
    result = ingest(engine, [good[0], *bad, good[1], good[2]])
    assert result["inserted"] == 3 and result["dead_letters"] == len(bad)
    with Session(engine) as session:
        letters = session.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
    assert all(letter.source == "lambda" and letter.reason for letter in letters)
    assert json.loads(letters[0].raw_payload) == "not an object"
    assert letters[3].device_id == "d1" and "version" in letters[3].reason


def test_a_payload_naming_another_device_than_its_topic_is_refused_on_the_lambda_path(engine: Engine) -> None:
    """The rule names the topic's device ``topic_device_id``: a payload that claims another device is a dead letter
    (as on the MQTT path), never a reading of the device it names; an event without the topic's id as well."""
    forged = iot_event("d1", 1, device_id="victim")
    missing = {k: v for k, v in iot_event("d1", 2).items() if k != "topic_device_id"}
    no_claim = {k: v for k, v in iot_event("d1", 3).items() if k != "device_id"}  # the topic alone says who
    status = {
        "v": 1,
        "status": "online",
        "zone_id": "zone-1",
        "topic_device_id": "d1",
        "device_id": "victim",
        "kind": "status",
        "received_at": int(time.time() * 1000),
    }
    result = ingest(engine, [forged, missing, no_claim, status])
    assert (result["inserted"], result["dead_letters"], result["statuses"]) == (1, 3, 0), result
    with Session(engine) as session:
        reasons = [letter.reason for letter in session.scalars(select(DeadLetter).order_by(DeadLetter.id))]
        devices = set(session.scalars(select(Device.id)))
    assert "payload device_id 'victim' does not match the topic's" in reasons[0]
    assert "event has no topic_device_id" in reasons[1] and "does not match the topic's" in reasons[2]
    assert devices == {"d1"}  # nothing stored under the name the payload claimed
    mqtt = from_mqtt("pzone/zone-1/d1/tilt", json.dumps({**forged, "device_id": "victim"}).encode(), 0, 4096)
    assert (
        mqtt.error is not None and "does not match the topic's" in mqtt.error
    )  # the same check, the same words


@pytest.mark.parametrize(
    "bad",
    [
        {"received_at": 1e300},
        {"received_at": -1e18},
        {"received_at": "soon"},
        {"received_at": 10**400},
        {"kind": "status", "status": "online", "received_at": "soon"},
        {"kind": "status", "status": "online", "received_at": 1e300},
        {"kind": "status", "status": "online", "received_at": [1]},
    ],
)
def test_a_value_the_checks_did_not_foresee_is_one_dead_letter_not_a_failed_batch(
    engine: Engine, bad: dict[str, Any]
) -> None:
    result = ingest(engine, [iot_event("d1", 1), {**iot_event("d1", 2), **bad}, iot_event("d1", 3)])
    assert (result["inserted"], result["dead_letters"]) == (2, 1), result
    with Session(engine) as session:
        (letter,) = session.scalars(select(DeadLetter)).all()
    assert "received_at" in letter.reason, letter.reason


def test_nul_bytes_and_binary_payloads_are_kept_as_bytes(engine: Engine) -> None:
    blob = b"\x00\xff\xfe binary \x00"
    item = from_mqtt("pzone/zone-1/d1/tilt", blob, int(time.time() * 1000), 4096)
    assert process_batch(engine, [item], LIMITS, source="mqtt").dead_letters == 1
    with engine.connect() as conn:
        assert conn.execute(select(DeadLetter.raw_payload)).scalar_one() == blob


def test_an_oversized_payload_leaves_a_short_dead_letter_with_its_whole_size(engine: Engine) -> None:
    big = b'{"v":1,"seq":1,' + b" " * 200_000 + b"}"
    item = from_mqtt("pzone/zone-1/d1/tilt", big, int(time.time() * 1000), 4096)
    assert process_batch(engine, [item], LIMITS, source="mqtt").dead_letters == 1
    with Session(engine) as session:
        (letter,) = session.scalars(select(DeadLetter)).all()
    assert letter.payload_size == len(big) and letter.raw_payload == big[:1024]
    assert "exceeds 4096" in letter.reason


def test_status_messages_update_devices(engine: Engine) -> None:
    now = int(time.time() * 1000)
    items = [
        from_mqtt("pzone/zone-1/d1/status", b'{"v":1,"status":"online"}', now, 4096),
        from_mqtt("pzone/zone-1/d2/status", b'{"v":1,"status":"asleep"}', now, 4096),
    ]
    result = process_batch(engine, items, LIMITS, source="mqtt")
    assert result.statuses == 1 and result.dead_letters == 1
    with engine.connect() as conn:
        assert conn.execute(select(Device.status).where(Device.id == "d1")).scalar_one() == "online"


@pytest.fixture
def lambda_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from pzone_ingest import handler as handler_module

    monkeypatch.setenv("PZONE_DATABASE_URL", db_url)
    handler_module._runtime.cache_clear()
    yield db_url
    engine, _ = handler_module._runtime()
    engine.dispose()
    handler_module._runtime.cache_clear()


def test_lambda_handler_single_event_and_list(lambda_env: str) -> None:
    from pzone_ingest.handler import handler

    assert handler(iot_event("d9", 1), None)["inserted"] == 1
    summary = handler([iot_event("d9", 2), iot_event("d9", 1), iot_event("d9", 3, 88), {"junk": True}], None)
    assert summary == {
        "received": 4,
        "inserted": 2,
        "duplicates": 1,
        "dead_letters": 1,
        "seq_jumps": 0,
        "epoch_switches": 0,
        "statuses": 0,
        "alarms_opened": 1,
        "alarms_closed": 0,
    }
    assert handler([], None)["received"] == 0
    engine = make_engine(lambda_env)
    try:
        assert count(engine, SensorReading) == 3
    finally:
        engine.dispose()


def test_lambda_handler_raises_when_the_database_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database failure must fail the invocation, so that the IoT rule's error action keeps the message."""
    from sqlalchemy.exc import OperationalError

    from pzone_ingest import handler as handler_module

    monkeypatch.setenv(
        "PZONE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=1"
    )
    handler_module._runtime.cache_clear()
    try:
        with pytest.raises(OperationalError):
            handler_module.handler(iot_event("d1", 1), None)
    finally:
        handler_module._runtime.cache_clear()
