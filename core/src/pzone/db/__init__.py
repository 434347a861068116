"""Database schema (SQLAlchemy 2) and engine helpers; Alembic (pzone.migrations) owns the schema."""

from pzone.db.engine import make_engine
from pzone.db.models import Alarm, Base, DeadLetter, Device, SensorReading, Zone

__all__ = ["Alarm", "Base", "DeadLetter", "Device", "SensorReading", "Zone", "make_engine"]
