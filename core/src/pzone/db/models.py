"""Tables of the telemetry path. Alembic migrations in ``pzone.migrations`` create them; applications never do."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so that migrations are the same on PostgreSQL and SQLite.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY, so BIGINT ids are INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Zone(Base):
    """A monitored area (e.g. a parking zone); created on the first reading that names it."""

    __tablename__ = "zones"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Device(Base):
    """A tilt sensor on one monitored object, with its latest known state: within the sequence counter's current
    epoch the newest sequence number wins; a reading of another epoch received later starts that epoch."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_epoch: Mapped[int | None] = mapped_column(BigInteger)
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    last_measured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_tilt_deg: Mapped[float | None] = mapped_column(Float)
    last_state: Mapped[str | None] = mapped_column(String(16))
    battery: Mapped[float | None] = mapped_column(Float)
    # From the retained status topic (online/offline, with the broker's last will).
    status: Mapped[str | None] = mapped_column(String(16))
    status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SensorReading(Base):
    """One accelerometer reading; (device_id, epoch, seq) is unique so that a replayed message is not a second row,
    while a reflashed device (a new epoch, counting from 0 again) is."""

    __tablename__ = "sensor_readings"
    __table_args__ = (
        UniqueConstraint("device_id", "epoch", "seq", name="uq_sensor_readings_device_epoch_seq"),
        Index("ix_sensor_readings_device_measured", "device_id", "measured_at"),
        # Labels look readings up by server time (device clocks may be skewed); revision 0003.
        Index("ix_sensor_readings_device_received", "device_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"))
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    seq: Mapped[int] = mapped_column(BigInteger)
    device_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The device's time when it is plausible (within the clock tolerances), else the receive time.
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ax: Mapped[float] = mapped_column(Float)
    ay: Mapped[float] = mapped_column(Float)
    az: Mapped[float] = mapped_column(Float)
    battery: Mapped[float | None] = mapped_column(Float)
    tilt_deg: Mapped[float] = mapped_column(Float)
    pitch_deg: Mapped[float] = mapped_column(Float)
    roll_deg: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))


class Alarm(Base):
    """One open alarm per device and kind. ``fallen``: opened by a reading past the fallen threshold, closed by the
    next upright one. ``seq_jump``: opened when a device's readings are refused for a sequence number far ahead of
    its last one (``opened_seq`` is the refused number), closed by its next accepted reading."""

    __tablename__ = "alarms"
    __table_args__ = (
        Index(
            "uq_alarms_one_open_per_device_kind",
            "device_id",
            "kind",
            unique=True,
            postgresql_where=text("closed_at IS NULL"),
            sqlite_where=text("closed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"))
    kind: Mapped[str] = mapped_column(String(32), default="fallen")
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    opened_seq: Mapped[int] = mapped_column(BigInteger)
    opened_tilt_deg: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_seq: Mapped[int | None] = mapped_column(BigInteger)


class DeadLetter(Base):
    """A message the ingest could not accept, kept with its raw bytes and the reason."""

    __tablename__ = "ingest_dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(16))  # "mqtt" (worker) or "lambda"
    topic: Mapped[str | None] = mapped_column(Text)
    zone_id: Mapped[str | None] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    payload_size: Mapped[int] = mapped_column(Integer)
    # Bytes, not text: a payload may hold anything, NUL included. Truncated to RAW_PAYLOAD_KEEP_BYTES.
    raw_payload: Mapped[bytes] = mapped_column(LargeBinary)


class User(Base):
    """A person using the web front: ``client`` photographs objects, ``operator`` also sees the dashboard."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4 text: same on PostgreSQL and SQLite
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id
    role: Mapped[str] = mapped_column(String(16), default="client")
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebSession(Base):
    """A login session kept in the database (used when PZONE_REDIS_URL is not set); keyed by the token's hash."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Photo(Base):
    """A photo of a monitored object, uploaded straight to object storage and then checked and thumbnailed.

    ``status``: ``awaiting_upload`` (created, presigned URL handed out) → ``stored`` (checked, derivatives made).
    A rejected upload leaves no row and no object. ``verdict`` is ``pending`` until the model tier answers.
    """

    __tablename__ = "photos"
    __table_args__ = (
        Index("ix_photos_user_created", "user_id", "created_at"),
        Index("ix_photos_status_processing", "status", "processing_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"), index=True)
    zone_id: Mapped[str | None] = mapped_column(ForeignKey("zones.id"))
    status: Mapped[str] = mapped_column(String(24), default="awaiting_upload")
    upload_key: Mapped[str | None] = mapped_column(String(512))  # staging object of a presigned upload
    declared_content_type: Mapped[str | None] = mapped_column(String(100))
    client_taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    original_key: Mapped[str | None] = mapped_column(String(512))
    thumb_key: Mapped[str | None] = mapped_column(String(512))
    preview_key: Mapped[str | None] = mapped_column(String(512))
    content_type: Mapped[str | None] = mapped_column(String(100))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    taken_at_source: Mapped[str | None] = mapped_column(String(16))  # exif, client, upload or operator
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Revision 0005: when the photo last went to "processing" (claimed, staged or re-enqueued), and until when a
    # photo worker holds it (a lease: a job lost with a crashed worker is re-enqueued once both lie in the past).
    processing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker_lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verdict: Mapped[str] = mapped_column(String(16), default="pending")
    verdict_probs: Mapped[str | None] = mapped_column(Text)  # JSON {"upright": p, "tilted": p, "fallen": p}
    model_version: Mapped[str | None] = mapped_column(String(100))
    verdict_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verdict_attempts: Mapped[int] = mapped_column(Integer, default=0)


class PhotoLabel(Base):
    """The measured state of a stored photo: the sensor's label (recomputed) and an operator's (kept, and winning).

    Sensor columns (``label`` … ``params_hash``) are rewritten by every ``pzone.labels.refresh_labels``; the manual
    columns only by ``set_manual_label``. ``label`` is null when the sensor could not tell, ``reason`` says why.
    ``source`` is ``manual`` while ``manual_label`` is set, else ``sensor``.
    """

    __tablename__ = "photo_labels"

    photo_id: Mapped[str] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str | None] = mapped_column(String(16))  # the sensor's: upright, tilted, fallen or null
    source: Mapped[str] = mapped_column(String(16), default="sensor")  # sensor or manual (the one that wins)
    reason: Mapped[str] = mapped_column(String(32))  # "ok", or why there is no sensor label
    # The nearest reading in the window (no foreign key: readings may be pruned, the label stays).
    reading_id: Mapped[int | None] = mapped_column(BigInteger)
    gap_s: Mapped[float | None] = mapped_column(Float)  # |reading time - taken_at|
    readings_in_window: Mapped[int] = mapped_column(Integer, default=0)
    angle_deg: Mapped[float | None] = mapped_column(Float)
    quality: Mapped[float | None] = mapped_column(Float)  # 0..1
    manual_label: Mapped[str | None] = mapped_column(String(16))
    manual_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    manual_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    computed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # null: not yet computed
    params_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 of the LabelParams used


class Prediction(Base):
    """One verdict of the model tier on one photo, kept for good: a re-classification adds a row (the photo keeps the
    latest verdict). Scored against the photo's effective label by ``pzone.accuracy``; revision 0004."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_version_predicted", "model_version", "predicted_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    photo_id: Mapped[str] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(16))  # upright, tilted or fallen
    probs: Mapped[str | None] = mapped_column(Text)  # JSON {"upright": p, "tilted": p, "fallen": p}
    predicted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


RAW_PAYLOAD_KEEP_BYTES = 65536


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, typed as such (for bulk statements that skip the ORM)."""
    return cast(Table, model.__table__)
