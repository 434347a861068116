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
from pzone.telemetry import InvalidReading, Limits, Reading, check_id, parse_reading, received_at_of
from pzone.tilt import TiltState
from pzone_ingest.messages import Incoming
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
    "UPDATE devices AS d SET zone_id = v.zone_id, last_seq = v.last_seq, last_measured_at = v.measured, "
    "last_received_at = v.received, last_tilt_deg = v.tilt, last_state = v.state, battery = v.battery "
    "FROM unnest(CAST(:ids AS text[]), CAST(:zones AS text[]), CAST(:seqs AS int8[]), "
    "CAST(:measured AS timestamptz[]), CAST(:received AS timestamptz[]), CAST(:tilts AS float8[]), "
    "CAST(:states AS text[]), CAST(:batteries AS float8[])) "
    "AS v(id, zone_id, last_seq, measured, received, tilt, state, battery) WHERE d.id = v.id"
)
_PG_DEVICE_COLUMNS = {
    "ids": "b_id",
    "zones": "zone_id",
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
    dead_letters: int = 0
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


def validate(
    items: Sequence[Incoming], limits: Limits
) -> tuple[list[Reading], list[StatusUpdate], list[_Rejected], int]:
    """Split a batch into readings (first of each (device, seq) only), status updates and rejects."""
    readings: list[Reading] = []
    statuses: list[StatusUpdate] = []
    rejected: list[_Rejected] = []
    seen: set[tuple[str, int]] = set()
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
        key = (reading.device_id, reading.seq)
        if key in seen:
            in_batch_duplicates += 1
            continue
        seen.add(key)
        readings.append(reading)
    return readings, statuses, rejected, in_batch_duplicates


def process_batch(engine: Engine, items: Sequence[Incoming], limits: Limits, source: str) -> BatchResult:
    """Validate and store one batch in a single transaction; raises only when the database itself fails."""
    readings, statuses, rejected, in_batch_duplicates = validate(items, limits)
    result = BatchResult(received=len(items), dead_letters=len(rejected), statuses=len(statuses))
    with engine.begin() as conn:
        _ensure_zones_and_devices(conn, readings, statuses)
        last_seq = _lock_devices(conn, sorted({r.device_id for r in readings}))
        inserted = insert_readings(conn, readings)
        result.inserted = len(inserted)
        result.duplicates = in_batch_duplicates + len(readings) - len(inserted)
        fresh = [r for r in readings if (r.device_id, r.seq) in inserted]
        result.alarms_opened, result.alarms_closed = _apply_device_state(conn, fresh, last_seq)
        _apply_statuses(conn, statuses)
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


def _lock_devices(conn: Connection, device_ids: list[str]) -> dict[str, int | None]:
    """Each device's newest applied sequence number, with its row locked until commit (PostgreSQL)."""
    if not device_ids:
        return {}
    table = table_of(Device)
    stmt = select(table.c.id, table.c.last_seq).where(table.c.id.in_(device_ids)).order_by(table.c.id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return {device_id: seq for device_id, seq in conn.execute(stmt)}


def _apply_device_state(
    conn: Connection, fresh: Sequence[Reading], last_seq: dict[str, int | None]
) -> tuple[int, int]:
    """Move each device's latest state and its alarms forward through readings newer than the last applied one.

    A reading that arrives late (lower sequence number than one already applied) is stored but changes nothing.
    """
    newer: dict[str, list[Reading]] = defaultdict(list)
    for reading in fresh:
        previous = last_seq.get(reading.device_id)
        if previous is None or reading.seq > previous:
            newer[reading.device_id].append(reading)
    if not newer:
        return 0, 0
    alarms = table_of(Alarm)
    open_alarms = {
        device_id: alarm_id
        for alarm_id, device_id in conn.execute(
            select(alarms.c.id, alarms.c.device_id).where(
                alarms.c.device_id.in_(sorted(newer)), alarms.c.closed_at.is_(None)
            )
        )
    }
    new_alarms: list[dict[str, Any]] = []
    closes: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    opened = closed = 0
    for device_id in sorted(newer):
        ordered = sorted(newer[device_id], key=lambda r: r.seq)
        open_row: dict[str, Any] | None = None  # an alarm opened within this batch
        existing_open = open_alarms.get(device_id)
        for reading in ordered:
            is_open = open_row is not None or existing_open is not None
            if reading.state is TiltState.FALLEN and not is_open:
                open_row = {
                    "device_id": device_id,
                    "zone_id": reading.zone_id,
                    "kind": "fallen",
                    "opened_at": reading.measured_at,
                    "opened_seq": reading.seq,
                    "opened_tilt_deg": reading.tilt_deg,
                    "closed_at": None,
                    "closed_seq": None,
                }
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
    if conn.dialect.name == "postgresql":  # one statement for all devices; rows already locked in order
        conn.execute(
            _PG_UPDATE_DEVICES,
            {column: [row[key] for row in device_rows] for column, key in _PG_DEVICE_COLUMNS.items()},
        )
    else:
        devices = table_of(Device)
        conn.execute(update(devices).where(devices.c.id == bindparam("b_id")), device_rows)
    return opened, closed


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
