"""The one ingest step shared by the Lambda and the worker: validate, derive, store idempotently, raise alarms.

Everything for a batch happens in one transaction: readings, device state, alarms and dead letters are committed
together or not at all, so a caller may acknowledge the messages exactly when :func:`process_batch` returns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, text, update

from pzone.db.models import Alarm, DeadLetter, Device, Zone, table_of
from pzone.telemetry import (
    ALARM_FALLEN,
    ALARM_SEQ_JUMP,
    InvalidReading,
    Limits,
    Reading,
    check_id,
    parse_reading,
    received_at_of,
)
from pzone.tilt import TiltState
from pzone_ingest.messages import Incoming
from pzone_ingest.sequence import Counter, plan_device
from pzone_ingest.store import dialect_insert, insert_readings

DEVICE_STATUSES = ("online", "offline")

# PostgreSQL: whole-batch statements over arrays (unnest) instead of one statement per device.
_PG_UPSERT_ZONES = text(
    "INSERT INTO zones (id, created_at) SELECT z, :now FROM unnest(CAST(:zones AS text[])) AS z "
    "ORDER BY z ON CONFLICT (id) DO NOTHING"
)
_PG_UPSERT_DEVICES = text(
    "INSERT INTO devices (id, zone_id, created_at) SELECT d, z, :now "
    "FROM unnest(CAST(:ids AS text[]), CAST(:zones AS text[])) AS t(d, z) ORDER BY d ON CONFLICT (id) DO NOTHING"
)
_PG_UPDATE_DEVICES = text(
    "UPDATE devices AS d SET zone_id = v.zone_id, last_epoch = v.last_epoch, last_seq = v.last_seq, "
    "last_measured_at = v.measured, last_received_at = v.received, last_tilt_deg = v.tilt, last_state = v.state, "
    "battery = v.battery "
    "FROM unnest(CAST(:ids AS text[]), CAST(:zones AS text[]), CAST(:epochs AS int8[]), CAST(:seqs AS int8[]), "
    "CAST(:measured AS timestamptz[]), CAST(:received AS timestamptz[]), CAST(:tilts AS float8[]), "
    "CAST(:states AS text[]), CAST(:batteries AS float8[])) "
    "AS v(id, zone_id, last_epoch, last_seq, measured, received, tilt, state, battery) WHERE d.id = v.id"
)
_PG_DEVICE_COLUMNS = {
    "ids": "b_id",
    "zones": "zone_id",
    "epochs": "last_epoch",
    "seqs": "last_seq",
    "measured": "last_measured_at",
    "received": "last_received_at",
    "tilts": "last_tilt_deg",
    "states": "last_state",
    "batteries": "battery",
}


@dataclass
class BatchResult:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0  # the refused sequence jumps included
    seq_jumps: int = 0
    epoch_switches: int = 0
    statuses: int = 0
    alarms_opened: int = 0
    alarms_closed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    zone_id: str
    device_id: str
    status: str
    at: datetime


@dataclass(slots=True)
class _Rejected:
    item: Incoming
    reason: str


def parse_status(event: Any) -> StatusUpdate:
    if not isinstance(event, dict):
        raise InvalidReading("status event must be a JSON object")
    status = event.get("status")
    if status not in DEVICE_STATUSES:
        raise InvalidReading(f"status must be one of {DEVICE_STATUSES}, got {status!r:.40}")
    return StatusUpdate(
        check_id("zone_id", event.get("zone_id")),
        check_id("device_id", event.get("device_id")),
        status,
        received_at_of(event),
    )


ReadingKey = tuple[str, int, int]  # (device_id, epoch, seq): the readings' unique key


def reading_key(reading: Reading) -> ReadingKey:
    return reading.device_id, reading.epoch, reading.seq


@dataclass(slots=True)
class Validated:
    readings: list[Reading]  # the first of each (device, epoch, seq) only
    origins: dict[ReadingKey, Incoming]  # the message each reading came from, for its dead letter if refused
    statuses: list[StatusUpdate]
    rejected: list[_Rejected]
    in_batch_duplicates: int


def validate(items: Sequence[Incoming], limits: Limits) -> Validated:
    """Split a batch into readings, status updates and rejects."""
    readings: list[Reading] = []
    origins: dict[ReadingKey, Incoming] = {}
    statuses: list[StatusUpdate] = []
    rejected: list[_Rejected] = []
    in_batch_duplicates = 0
    for item in items:
        if item.error is not None:
            rejected.append(_Rejected(item, item.error))
            continue
        try:
            if item.kind == "status":
                statuses.append(parse_status(item.event))
                continue
            reading = parse_reading(item.event, limits)
        except InvalidReading as exc:
            rejected.append(_Rejected(item, exc.reason))
            continue
        except (
            Exception
        ) as exc:  # a case the checks missed: this message's dead letter, never the batch's failure
            rejected.append(_Rejected(item, f"unreadable message ({type(exc).__name__}: {exc})"[:500]))
            continue
        key = reading_key(reading)
        if key in origins:
            in_batch_duplicates += 1
            continue
        origins[key] = item
        readings.append(reading)
    return Validated(readings, origins, statuses, rejected, in_batch_duplicates)


def process_batch(engine: Engine, items: Sequence[Incoming], limits: Limits, source: str) -> BatchResult:
    """Validate and store one batch in a single transaction; raises only when the database itself fails."""
    batch = validate(items, limits)
    result = BatchResult(received=len(items), statuses=len(batch.statuses))
    by_device: dict[str, list[Reading]] = defaultdict(list)
    for reading in batch.readings:
        by_device[reading.device_id].append(reading)
    with engine.begin() as conn:
        _ensure_zones_and_devices(conn, batch.readings, batch.statuses)
        counters = _lock_devices(conn, sorted(by_device))
        plans = {d: plan_device(rs, counters.get(d, Counter()), limits) for d, rs in by_device.items()}
        refused = {reading_key(r): reason for plan in plans.values() for r, reason in plan.refused}
        inserted = insert_readings(conn, [r for r in batch.readings if reading_key(r) not in refused])
        result.inserted = len(inserted)
        result.duplicates = batch.in_batch_duplicates + len(batch.readings) - len(refused) - len(inserted)
        result.seq_jumps = len(refused)
        result.epoch_switches = sum(plan.epoch_switches for plan in plans.values())
        # Only what was really inserted moves a device: a redelivered reading already did.
        applied = {
            d: fresh
            for d, plan in plans.items()
            if (fresh := [r for r in plan.advancing if reading_key(r) in inserted])
        }
        jumped = {d: plan.refused[0][0] for d, plan in plans.items() if plan.refused}
        result.alarms_opened, result.alarms_closed = _apply_device_state(conn, applied, jumped)
        _apply_statuses(conn, batch.statuses)
        rejected = batch.rejected + [_Rejected(batch.origins[key], reason) for key, reason in refused.items()]
        result.dead_letters = len(rejected)
        _insert_dead_letters(conn, rejected, source)
    return result


def _ensure_zones_and_devices(
    conn: Connection, readings: Sequence[Reading], statuses: Sequence[StatusUpdate]
) -> None:
    device_zone: dict[str, str] = {}
    for reading in readings:
        device_zone.setdefault(reading.device_id, reading.zone_id)
    for status in statuses:
        device_zone.setdefault(status.device_id, status.zone_id)
    if not device_zone:
        return
    now = datetime.now(UTC)
    # Sorted: concurrent workers then take unique-index locks in one order and cannot deadlock.
    if conn.dialect.name == "postgresql":  # one statement per table, not one per row
        ids = sorted(device_zone)
        conn.execute(_PG_UPSERT_ZONES, {"zones": sorted(set(device_zone.values())), "now": now})
        conn.execute(_PG_UPSERT_DEVICES, {"ids": ids, "zones": [device_zone[i] for i in ids], "now": now})
        return
    zones = [{"id": zone_id, "created_at": now} for zone_id in sorted(set(device_zone.values()))]
    conn.execute(dialect_insert(conn, table_of(Zone)).on_conflict_do_nothing(index_elements=["id"]), zones)
    devices = [{"id": d, "zone_id": z, "created_at": now} for d, z in sorted(device_zone.items())]
    conn.execute(
        dialect_insert(conn, table_of(Device)).on_conflict_do_nothing(index_elements=["id"]), devices
    )


def _lock_devices(conn: Connection, device_ids: list[str]) -> dict[str, Counter]:
    """Each device's applied counter, with its row locked until commit (PostgreSQL)."""
    if not device_ids:
        return {}
    table = table_of(Device)
    stmt = (
        select(
            table.c.id,
            table.c.last_epoch,
            table.c.last_seq,
            table.c.last_measured_at,
            table.c.last_received_at,
        )
        .where(table.c.id.in_(device_ids))
        .order_by(table.c.id)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    counters = {}
    for device_id, epoch, seq, measured_at, received_at in conn.execute(stmt):
        # A device last written without an epoch (seeded, or before epochs existed) counted in epoch 0.
        if epoch is None and seq is not None:
            epoch = 0
        counters[device_id] = Counter(epoch, seq, _aware(measured_at), _aware(received_at))
    return counters


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands timestamps back without their zone; they were stored as UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _apply_device_state(
    conn: Connection, newer: dict[str, list[Reading]], jumped: dict[str, Reading]
) -> tuple[int, int]:
    """Move each device's latest state and its fallen alarm forward through ``newer`` (in the order the sequence
    plan gave); open a seq_jump alarm for each device in ``jumped`` (its first refused reading) and close one of a
    device whose readings are accepted again."""
    if not newer and not jumped:
        return 0, 0
    alarms = table_of(Alarm)
    open_alarms: dict[tuple[str, str], int] = {
        (device_id, kind): alarm_id
        for alarm_id, device_id, kind in conn.execute(
            select(alarms.c.id, alarms.c.device_id, alarms.c.kind).where(
                alarms.c.device_id.in_(sorted(set(newer) | set(jumped))), alarms.c.closed_at.is_(None)
            )
        )
    }
    new_alarms: list[dict[str, Any]] = []
    closes: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    opened = closed = 0
    for device_id, reading in sorted(jumped.items()):
        if (device_id, ALARM_SEQ_JUMP) not in open_alarms:
            new_alarms.append(_alarm_row(reading, ALARM_SEQ_JUMP, reading.received_at))
            opened += 1
    for device_id in sorted(newer):
        ordered = newer[device_id]
        jump_alarm = open_alarms.get((device_id, ALARM_SEQ_JUMP))
        if jump_alarm is not None and device_id not in jumped:
            closes.append({"b_id": jump_alarm, "b_at": ordered[0].received_at, "b_seq": ordered[0].seq})
            closed += 1
        open_row: dict[str, Any] | None = None  # an alarm opened within this batch
        existing_open = open_alarms.get((device_id, ALARM_FALLEN))
        for reading in ordered:
            is_open = open_row is not None or existing_open is not None
            if reading.state is TiltState.FALLEN and not is_open:
                open_row = _alarm_row(reading, ALARM_FALLEN, reading.measured_at)
                new_alarms.append(open_row)
                opened += 1
            elif reading.state is TiltState.UPRIGHT and is_open:
                if open_row is not None:
                    open_row["closed_at"], open_row["closed_seq"] = reading.measured_at, reading.seq
                    open_row = None
                else:
                    closes.append({"b_id": existing_open, "b_at": reading.measured_at, "b_seq": reading.seq})
                    existing_open = None
                closed += 1
        latest = ordered[-1]
        device_rows.append(
            {
                "b_id": device_id,
                "zone_id": latest.zone_id,
                "last_epoch": latest.epoch,
                "last_seq": latest.seq,
                "last_measured_at": latest.measured_at,
                "last_received_at": latest.received_at,
                "last_tilt_deg": latest.tilt_deg,
                "last_state": latest.state.value,
                "battery": latest.battery,
            }
        )
    if closes:
        conn.execute(
            update(alarms)
            .where(alarms.c.id == bindparam("b_id"))
            .values(closed_at=bindparam("b_at"), closed_seq=bindparam("b_seq")),
            closes,
        )
    if new_alarms:
        conn.execute(alarms.insert(), new_alarms)
    # PostgreSQL: one statement for all devices, their rows already locked in order.
    if device_rows and conn.dialect.name == "postgresql":
        conn.execute(
            _PG_UPDATE_DEVICES,
            {column: [row[key] for row in device_rows] for column, key in _PG_DEVICE_COLUMNS.items()},
        )
    elif device_rows:
        devices = table_of(Device)
        conn.execute(update(devices).where(devices.c.id == bindparam("b_id")), device_rows)
    return opened, closed


def _alarm_row(reading: Reading, kind: str, at: datetime) -> dict[str, Any]:
    return {
        "device_id": reading.device_id,
        "zone_id": reading.zone_id,
        "kind": kind,
        "opened_at": at,
        "opened_seq": reading.seq,
        "opened_tilt_deg": reading.tilt_deg,
        "closed_at": None,
        "closed_seq": None,
    }


def _apply_statuses(conn: Connection, statuses: Sequence[StatusUpdate]) -> None:
    if not statuses:
        return
    devices = table_of(Device)
    rows = [{"b_id": s.device_id, "status": s.status, "status_at": s.at} for s in statuses]
    conn.execute(update(devices).where(devices.c.id == bindparam("b_id")), rows)


def _insert_dead_letters(conn: Connection, rejected: Sequence[_Rejected], source: str) -> None:
    if not rejected:
        return
    now = datetime.now(UTC)
    rows = []
    for entry in rejected:
        event = entry.item.event if isinstance(entry.item.event, dict) else {}
        zone_id, device_id = event.get("zone_id"), event.get("device_id")
        rows.append(
            {
                "received_at": now,
                "source": source,
                "topic": entry.item.topic,
                "zone_id": zone_id[:64] if isinstance(zone_id, str) else None,
                "device_id": device_id[:64] if isinstance(device_id, str) else None,
                "reason": entry.reason[:2000],
                "payload_size": entry.item.size if entry.item.size is not None else len(entry.item.raw),
                "raw_payload": entry.item.raw,
            }
        )
    conn.execute(table_of(DeadLetter).insert(), rows)
