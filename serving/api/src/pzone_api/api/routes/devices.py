"""The device list every signed-in user may read (the upload page's device picker)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from pzone.db.models import Device
from pzone_api.api.deps import CurrentUser, DbDep
from pzone_api.api.errors import SIGNED_IN

router = APIRouter(prefix="/api/devices", tags=["devices"], responses=SIGNED_IN)


class DeviceBrief(BaseModel):
    id: str
    zone_id: str
    last_state: str | None = Field(description="upright, tilted or fallen; null before the first reading.")


@router.get("")
def list_devices(user: CurrentUser, db: DbDep) -> list[DeviceBrief]:
    """All devices with their zone and latest state, sorted by zone then id."""
    rows = db.execute(
        select(Device.id, Device.zone_id, Device.last_state).order_by(Device.zone_id, Device.id)
    ).all()
    return [DeviceBrief(id=r.id, zone_id=r.zone_id, last_state=r.last_state) for r in rows]
