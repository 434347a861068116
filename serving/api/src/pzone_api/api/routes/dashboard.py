"""The operators' dashboard: devices with their open alarm, the alarm log, tilt history and fleet counts.

Every route needs the operator role (401 without a session, 403 for clients). Times are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, overload

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, ScalarSelect, and_, func, select

from pzone.db.models import Alarm, Device, SensorReading, Zone
from pzone.telemetry import ALARM_FALLEN
from pzone.tilt import TILT_CLASSES
from pzone_api.api.deps import DbDep, require_operator
from pzone_api.api.errors import OPERATOR, refused
from pzone_api.api.fields import IdInPath

router = APIRouter(
    prefix="/api/dashboard", tags=["dashboard"], dependencies=[Depends(require_operator)], responses=OPERATOR
)

TILT_MAX_MINUTES = 7 * 24 * 60
TILT_MAX_POINTS = 5000
ALARMS_MAX_LIMIT = 1000


@overload
def _utc(moment: datetime) -> datetime: ...
@overload
def _utc(moment: datetime | None) -> datetime | None: ...
def _utc(moment: datetime | None) -> datetime | None:
    """In UTC: SQLite hands back naive datetimes (stored as UTC), PostgreSQL ones in the session's time zone."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class OpenAlarmBrief(BaseModel):
    id: int
    opened_at: datetime
    opened_tilt_deg: float


class DashboardDevice(BaseModel):
    id: str
    zone_id: str
    last_state: str | None = Field(description="upright, tilted or fallen; null before the first reading.")
    last_tilt_deg: float | None
    last_seq: int | None
    last_measured_at: datetime | None
    battery: float | None = Field(description="Percent, from the latest reading that carried it.")
    status: str | None = Field(description="online or offline (MQTT status topic); null when never reported.")
    open_alarm: OpenAlarmBrief | None = Field(description="The open fallen alarm, if any.")


class AlarmOut(BaseModel):
    id: int
    device_id: str
    zone_id: str
    kind: str = Field(
        description="fallen, or seq_jump: readings refused for a sequence number far ahead of the last one "
        "(opened_seq is the refused number; closed when the device's readings are accepted again)."
    )
    opened_at: datetime
    opened_seq: int
    opened_tilt_deg: float
    closed_at: datetime | None
    closed_seq: int | None


class TiltPoint(BaseModel):
    measured_at: datetime
    tilt_deg: float
    state: str


class TiltSeries(BaseModel):
    device_id: str
    points: list[TiltPoint]


class StateCounts(BaseModel):
    upright: int
    tilted: int
    fallen: int


class Summary(BaseModel):
    zones: int
    devices: int
    online: int = Field(description="Devices whose last status message was online.")
    open_alarms: int
    readings_last_hour: int = Field(description="Readings received in the last 60 minutes.")
    states: StateCounts = Field(description="Devices by their latest state.")


@router.get("/devices")
def dashboard_devices(db: DbDep) -> list[DashboardDevice]:
    """Every device with its latest reading, status and open alarm (if any), sorted by zone then id."""
    # One statement: at most one open alarm per device and kind (partial unique index), so the outer join on the
    # fallen kind adds no rows.
    rows = db.execute(
        select(Device, Alarm.id, Alarm.opened_at, Alarm.opened_tilt_deg)
        .outerjoin(
            Alarm,
            and_(Alarm.device_id == Device.id, Alarm.kind == ALARM_FALLEN, Alarm.closed_at.is_(None)),
        )
        .order_by(Device.zone_id, Device.id)
    ).all()
    out = []
    for device, alarm_id, opened_at, opened_tilt_deg in rows:
        open_alarm = None
        if alarm_id is not None:
            open_alarm = OpenAlarmBrief(
                id=alarm_id, opened_at=_utc(opened_at), opened_tilt_deg=opened_tilt_deg
            )
        out.append(
            DashboardDevice(
                id=device.id,
                zone_id=device.zone_id,
                last_state=device.last_state,
                last_tilt_deg=device.last_tilt_deg,
                last_seq=device.last_seq,
                last_measured_at=_utc(device.last_measured_at),
                battery=device.battery,
                status=device.status,
                open_alarm=open_alarm,
            )
        )
    return out


@router.get("/alarms")
def dashboard_alarms(
    db: DbDep,
    open: Annotated[
        bool | None, Query(description="true: open alarms only; false: closed ones only; absent: all.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=ALARMS_MAX_LIMIT)] = 100,
) -> list[AlarmOut]:
    """Alarms, newest first (by opening time)."""
    stmt = select(Alarm).order_by(Alarm.opened_at.desc(), Alarm.id.desc()).limit(limit)
    if open is not None:
        stmt = stmt.where(Alarm.closed_at.is_(None) if open else Alarm.closed_at.is_not(None))
    return [
        AlarmOut(
            id=a.id,
            device_id=a.device_id,
            zone_id=a.zone_id,
            kind=a.kind,
            opened_at=_utc(a.opened_at),
            opened_seq=a.opened_seq,
            opened_tilt_deg=a.opened_tilt_deg,
            closed_at=_utc(a.closed_at),
            closed_seq=a.closed_seq,
        )
        for a in db.scalars(stmt)
    ]


@router.get("/devices/{device_id}/tilt", responses=refused(404, "No such device."))
def dashboard_tilt(
    device_id: IdInPath,
    db: DbDep,
    minutes: Annotated[int, Query(ge=1, le=TILT_MAX_MINUTES, description="Window back from now.")] = 60,
    limit: Annotated[
        int, Query(ge=1, le=TILT_MAX_POINTS, description="At most this many points: the newest ones.")
    ] = 500,
) -> TiltSeries:
    """One device's tilt readings measured within the last `minutes`, oldest first (the newest `limit` of them)."""
    if db.get(Device, device_id) is None:
        raise HTTPException(404, detail={"code": "not_found", "reason": "no such device"})
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    # Newest first so that LIMIT keeps the latest points (index ix_sensor_readings_device_measured), then reversed.
    rows = db.execute(
        select(SensorReading.measured_at, SensorReading.tilt_deg, SensorReading.state)
        .where(SensorReading.device_id == device_id, SensorReading.measured_at >= since)
        .order_by(SensorReading.measured_at.desc(), SensorReading.seq.desc())
        .limit(limit)
    ).all()
    points = [
        TiltPoint(measured_at=_utc(r.measured_at), tilt_deg=r.tilt_deg, state=r.state) for r in reversed(rows)
    ]
    return TiltSeries(device_id=device_id, points=points)


@router.get("/summary")
def dashboard_summary(db: DbDep) -> Summary:
    """Fleet counts: zones, devices, online devices, open alarms, readings of the last hour, devices by state."""

    def count(model: Any, *where: ColumnElement[bool]) -> ScalarSelect[int]:
        return select(func.count()).select_from(model).where(*where).scalar_subquery()

    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    # One statement, so that the counts come from one snapshot.
    row = db.execute(
        select(
            count(Zone).label("zones"),
            count(Device).label("devices"),
            count(Device, Device.status == "online").label("online"),
            count(Alarm, Alarm.closed_at.is_(None)).label("open_alarms"),
            count(SensorReading, SensorReading.received_at >= hour_ago).label("readings_last_hour"),
            *(count(Device, Device.last_state == state).label(state) for state in TILT_CLASSES),
        )
    ).one()
    return Summary(
        zones=row.zones,
        devices=row.devices,
        online=row.online,
        open_alarms=row.open_alarms,
        readings_last_hour=row.readings_last_hour,
        states=StateCounts(upright=row.upright, tilted=row.tilted, fallen=row.fallen),
    )
