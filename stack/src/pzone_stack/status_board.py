"""What ``pzone up`` prints: devices with their latest tilt, open alarms and dead letters, refreshed live."""

from __future__ import annotations

import threading
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine, func, select

from pzone.db.models import Alarm, DeadLetter, Device, SensorReading
from pzone.telemetry import ALARM_FALLEN
from pzone.tilt import TiltState

STATE_STYLE: dict[str, str] = {
    TiltState.UPRIGHT: "green",
    TiltState.TILTED: "yellow",
    TiltState.FALLEN: "bold red",
}


class StatusBoard:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def render(self) -> Group:
        with self.engine.connect() as conn:
            devices = conn.execute(select(Device).order_by(Device.zone_id, Device.id)).all()
            readings = conn.execute(select(func.count()).select_from(SensorReading)).scalar_one()
            dead = conn.execute(select(func.count()).select_from(DeadLetter)).scalar_one()
            open_alarms = conn.execute(
                select(Alarm.device_id, Alarm.kind, Alarm.opened_at).where(Alarm.closed_at.is_(None))
            ).all()
            closed = conn.execute(
                select(func.count()).select_from(Alarm).where(Alarm.closed_at.is_not(None))
            ).scalar_one()
            last_dead = conn.execute(
                select(DeadLetter.reason).order_by(DeadLetter.id.desc()).limit(1)
            ).scalar()
        alarm_since = {d: opened_at for d, kind, opened_at in open_alarms if kind == ALARM_FALLEN}
        table = Table(title="P-ZONE devices", expand=False)
        for column in ("zone", "device", "state", "tilt °", "seq", "battery %", "status", "alarm since"):
            table.add_column(column)
        for d in devices:
            style = STATE_STYLE.get(d.last_state or "", "")
            table.add_row(
                d.zone_id,
                d.id,
                f"[{style}]{d.last_state}[/{style}]" if style else str(d.last_state),
                f"{d.last_tilt_deg:.1f}" if d.last_tilt_deg is not None else "-",
                str(d.last_seq) if d.last_seq is not None else "-",
                f"{d.battery:.0f}" if d.battery is not None else "-",
                d.status or "-",
                alarm_since[d.id].strftime("%H:%M:%S") if d.id in alarm_since else "",
            )
        summary = (
            f"readings stored: [bold]{readings}[/bold]   open alarms: [bold red]{len(open_alarms)}[/bold red]   "
            f"closed alarms: {closed}   dead letters: [bold]{dead}[/bold]"
        )
        if last_dead:
            summary += f"\nlast dead letter: {last_dead[:100]}"
        return Group(table, summary)

    def live(
        self, console: Console, stop: threading.Event, deadline: float | None, refresh_s: float = 1.0
    ) -> None:
        with Live(self.render(), console=console, refresh_per_second=4) as live:
            while not stop.wait(refresh_s):
                live.update(self.render())
                if deadline is not None and time.monotonic() >= deadline:
                    break
