"""Bulk writes of readings: COPY into a staging table then one merge on PostgreSQL, batched INSERT elsewhere.

Both return the (device_id, epoch, seq) keys that were really inserted, so that replays count as duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.exc import DBAPIError

from pzone.db.models import SensorReading, table_of
from pzone.telemetry import Reading

READING_COLUMNS = (
    "device_id",
    "zone_id",
    "epoch",
    "seq",
    "device_ts",
    "received_at",
    "measured_at",
    "ax",
    "ay",
    "az",
    "battery",
    "tilt_deg",
    "pitch_deg",
    "roll_deg",
    "state",
)
_PG_TYPES = (
    "text",
    "text",
    "int8",
    "int8",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "text",
)
_STAGING = "pzone_staging_readings"
COPY_MIN_ROWS = 64
_COLUMN_LIST = ", ".join(READING_COLUMNS)
_STAGING_COLUMNS = ", ".join(
    f"{name} {pg_type}" for name, pg_type in zip(READING_COLUMNS, _PG_TYPES, strict=True)
)


def _row(reading: Reading) -> tuple[Any, ...]:
    return (
        reading.device_id,
        reading.zone_id,
        reading.epoch,
        reading.seq,
        reading.device_ts,
        reading.received_at,
        reading.measured_at,
        reading.ax,
        reading.ay,
        reading.az,
        reading.battery,
        reading.tilt_deg,
        reading.pitch_deg,
        reading.roll_deg,
        reading.state.value,
    )


def insert_readings(conn: Connection, readings: Sequence[Reading]) -> set[tuple[str, int, int]]:
    if not readings:
        return set()
    # COPY pays a fixed cost (temp table, copy protocol); a handful of rows, as a Lambda call brings, go faster as INSERT.
    if conn.dialect.name == "postgresql" and len(readings) >= COPY_MIN_ROWS:
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            return _insert_readings_copy(conn, readings)
        except dbapi_error as exc:
            # Raw-driver errors wrapped like SQLAlchemy's own, so callers tell an outage from a refused row.
            raise DBAPIError.instance(
                "COPY/INSERT sensor_readings",
                None,
                exc,
                dbapi_error,
                connection_invalidated=conn.dialect.is_disconnect(
                    exc, conn.connection.dbapi_connection, None
                ),
            ) from exc
    return _insert_readings_batched(conn, readings)


def _insert_readings_copy(conn: Connection, readings: Sequence[Reading]) -> set[tuple[str, int, int]]:
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        # A session-local temp table, emptied by every commit. Created inside the transaction each time (a no-op
        # once it exists) because a rolled-back first batch would take the table with it.
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ({_STAGING_COLUMNS}) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(f"COPY {_STAGING} ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(_PG_TYPES))
            for reading in readings:
                copy.write_row(_row(reading))
        # Sorted so that concurrent workers take index locks in the same order (no deadlocks).
        cursor.execute(
            f"INSERT INTO sensor_readings ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGING} "
            "ORDER BY device_id, epoch, seq ON CONFLICT (device_id, epoch, seq) DO NOTHING "
            "RETURNING device_id, epoch, seq"
        )
        inserted = {(device_id, epoch, seq) for device_id, epoch, seq in cursor.fetchall()}
    return inserted


def _insert_readings_batched(conn: Connection, readings: Sequence[Reading]) -> set[tuple[str, int, int]]:
    table = table_of(SensorReading)
    rows = [dict(zip(READING_COLUMNS, _row(reading), strict=True)) for reading in readings]
    stmt = dialect_insert(conn, table).on_conflict_do_nothing(index_elements=["device_id", "epoch", "seq"])
    result = conn.execute(stmt.returning(table.c.device_id, table.c.epoch, table.c.seq), rows)
    return {(device_id, epoch, seq) for device_id, epoch, seq in result.all()}


def dialect_insert(conn: Connection, table: Any) -> Any:
    """INSERT with ON CONFLICT support for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    return insert(table)
