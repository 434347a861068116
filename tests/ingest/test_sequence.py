"""Sequence numbers and epochs: one absurd number never freezes a device, a reflashed device resumes under a new
epoch, and deduplication stays exact per (device, epoch, seq) — as a pure plan and through the batch on both
dialects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, select, text

from pzone.db.engine import make_engine
from pzone.db.models import Alarm, Base, DeadLetter, Device, SensorReading
from pzone.migrations import downgrade, upgrade
from pzone.telemetry import ALARM_FALLEN, ALARM_SEQ_JUMP, MAX_SEQ, Limits, parse_reading
from pzone_ingest.batch import process_batch
from pzone_ingest.messages import from_iot_event
from pzone_ingest.sequence import Counter, plan_device
from tests.support.ingest import count, iot_event

LIMITS = Limits()
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def reading(seq: int, *, epoch: int = 0, at_s: float = 0.0, tilt: float = 2.0) -> Any:
    when = T0 + timedelta(seconds=at_s)
    event = iot_event("d1", seq, tilt, epoch=epoch)
    event.update(ts=when.timestamp(), received_at=int(when.timestamp() * 1000))
    return parse_reading(event, LIMITS)


def seqs(readings: list[Any]) -> list[tuple[int, int]]:
    return [(r.epoch, r.seq) for r in readings]


@pytest.mark.unit
def test_a_jump_beyond_the_allowance_is_refused_and_the_device_goes_on() -> None:
    counter = Counter(epoch=0, seq=3, measured_at=T0, received_at=T0)
    plan = plan_device([reading(MAX_SEQ, at_s=1), reading(12, at_s=2), reading(2, at_s=3)], counter, LIMITS)
    assert seqs(plan.advancing) == [(0, 12)]  # 2 is late: stored, changes nothing
    [(refused, reason)] = plan.refused
    assert refused.seq == MAX_SEQ and reason.startswith("seq_jump: ")
    # The allowance is a floor plus a rate over the time since the last applied reading.
    floor, rate = LIMITS.seq_jump_floor, LIMITS.seq_jump_per_s
    assert seqs(plan_device([reading(3 + floor, at_s=0)], counter, LIMITS).advancing) == [(0, 3 + floor)]
    assert plan_device([reading(4 + floor, at_s=0)], counter, LIMITS).refused
    hour = 3600.0
    far = 3 + floor + int(rate * hour)
    assert seqs(plan_device([reading(far, at_s=hour)], counter, LIMITS).advancing) == [(0, far)]
    assert plan_device([reading(far + 1, at_s=hour)], counter, LIMITS).refused


@pytest.mark.unit
def test_a_new_epoch_measured_later_restarts_the_count_and_a_straggler_does_not() -> None:
    counter = Counter(epoch=0, seq=5000, measured_at=T0, received_at=T0)
    plan = plan_device([reading(0, epoch=77, at_s=10), reading(1, epoch=77, at_s=11)], counter, LIMITS)
    assert seqs(plan.advancing) == [(77, 0), (77, 1)] and plan.epoch_switches == 1 and not plan.refused
    # The old epoch's reading measured before the device's last one is a straggler, even with a higher number.
    moved = Counter(epoch=77, seq=1, measured_at=T0 + timedelta(seconds=11), received_at=T0)
    assert plan_device([reading(5001, epoch=0, at_s=-5)], moved, LIMITS).advancing == []
    # Within one batch: the current epoch's readings, then the new epoch that was measured after them.
    both = plan_device([reading(0, epoch=9, at_s=20), reading(5001, at_s=5)], counter, LIMITS)
    assert seqs(both.advancing) == [(0, 5001), (9, 0)]
    # A device's very first reading sets its counter, whatever its number.
    assert seqs(plan_device([reading(MAX_SEQ)], Counter(), LIMITS).advancing) == [(0, MAX_SEQ)]


def ingest(engine: Engine, events: list[dict[str, Any]]) -> dict[str, int]:
    return process_batch(engine, [from_iot_event(e) for e in events], LIMITS, source="mqtt").as_dict()


def device_state(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(select(Device.last_epoch, Device.last_seq, Device.last_state)).one())


def alarms(engine: Engine) -> list[tuple[str, int, int | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Alarm.kind, Alarm.opened_seq, Alarm.closed_seq).order_by(Alarm.id)).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.mark.integration
def test_one_absurd_sequence_number_is_refused_alarmed_and_freezes_nothing(engine: Engine) -> None:
    assert ingest(engine, [iot_event("d1", seq) for seq in (1, 2, 3)])["inserted"] == 3
    forged = ingest(engine, [iot_event("d1", MAX_SEQ)])
    assert (forged["inserted"], forged["seq_jumps"], forged["dead_letters"], forged["alarms_opened"]) == (
        0,
        1,
        1,
        1,
    )
    assert device_state(engine) == (0, 3, "upright")
    with engine.connect() as conn:
        letter = conn.execute(select(DeadLetter.reason, DeadLetter.device_id)).one()
    assert letter.reason.startswith("seq_jump: seq 9223372036854775807") and letter.device_id == "d1"
    assert alarms(engine) == [(ALARM_SEQ_JUMP, MAX_SEQ, None)]

    # The device's next honest reading, a fall, moves its state and opens its fallen alarm beside the open
    # seq_jump one, which the accepted reading then closes.
    fallen = ingest(engine, [iot_event("d1", 12, 85)])
    assert (fallen["inserted"], fallen["alarms_opened"], fallen["alarms_closed"]) == (1, 1, 1)
    assert device_state(engine) == (0, 12, "fallen")
    assert alarms(engine) == [(ALARM_SEQ_JUMP, MAX_SEQ, 12), (ALARM_FALLEN, 12, None)]
    # Refused twice in a row: still one open seq_jump alarm per device.
    ingest(engine, [iot_event("d1", 10**12)])
    ingest(engine, [iot_event("d1", 10**13)])
    assert [a for a in alarms(engine) if a[2] is None] == [
        (ALARM_FALLEN, 12, None),
        (ALARM_SEQ_JUMP, 10**12, None),
    ]
    assert count(engine, SensorReading) == 4


@pytest.mark.integration
def test_a_reflashed_device_resumes_under_a_new_epoch_and_replays_stay_duplicates(engine: Engine) -> None:
    old = [iot_event("d1", seq) for seq in range(6)]  # firmware without epochs: epoch 0
    assert ingest(engine, old)["inserted"] == 6
    # Reflashed: counting restarts at 0. Under the old key these six would all be dropped as replays.
    new = [iot_event("d1", seq, 85 if seq == 3 else 2.0, epoch=4242) for seq in range(4)]
    result = ingest(engine, new)
    assert (result["inserted"], result["duplicates"], result["epoch_switches"]) == (4, 0, 1)
    assert device_state(engine) == (4242, 3, "fallen")
    assert alarms(engine) == [(ALARM_FALLEN, 3, None)]
    # Replays of either epoch are duplicates, exactly.
    again = ingest(engine, old[:2] + new)
    assert (again["inserted"], again["duplicates"], again["epoch_switches"]) == (0, 6, 0)
    # An old-epoch reading measured before the device's latest one is stored but moves nothing.
    straggler = iot_event("d1", 6)
    straggler["ts"] -= 60
    assert ingest(engine, [straggler])["inserted"] == 1
    assert device_state(engine) == (4242, 3, "fallen")
    assert count(engine, SensorReading) == 11


@pytest.mark.integration
def test_the_epoch_migration_keeps_stored_readings_in_epoch_0_and_matches_the_models(db_url: str) -> None:
    downgrade(db_url, "0005")
    legacy = make_engine(db_url)
    try:
        assert ingest_before_epochs(legacy) == 1
    finally:
        legacy.dispose()
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert device_state(engine)[:2] == (0, 7)
        # The stored reading is epoch 0: its replay (firmware without epochs) stays a duplicate, a reflash is new.
        replay = ingest(engine, [iot_event("d1", 7)])
        assert (replay["inserted"], replay["duplicates"]) == (0, 1)
        assert ingest(engine, [iot_event("d1", 7, epoch=3)])["inserted"] == 1
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], "the models and the migrations disagree"
    finally:
        engine.dispose()


def ingest_before_epochs(engine: Engine) -> int:
    """One reading of device d1 (seq 7) written as revision 0005's schema holds it."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO zones (id, created_at) VALUES ('zone-1', :now)"), {"now": now})
        conn.execute(
            text("INSERT INTO devices (id, zone_id, created_at, last_seq) VALUES ('d1', 'zone-1', :now, 7)"),
            {"now": now},
        )
        return conn.execute(
            text(
                "INSERT INTO sensor_readings (device_id, zone_id, seq, received_at, measured_at, ax, ay, az, "
                "tilt_deg, pitch_deg, roll_deg, state) "
                "VALUES ('d1', 'zone-1', 7, :now, :now, 0, 0, 1, 0, 0, 0, 'upright')"
            ),
            {"now": now},
        ).rowcount
